// Builds csv_summary.js into a WASI 0.2 component with ComponentizeJS: `node build.mjs
// OUT.wasm`. fleet-wasi-jobs' build script runs it. HTTP and the fetch event are left
// out of the engine: a gateway offers a job no network.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: "csv_summary.js",
  witPath: "wit",
  worldName: "csv-summary",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
