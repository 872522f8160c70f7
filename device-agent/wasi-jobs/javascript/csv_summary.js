// csv-summary in JavaScript: the same job as the Rust, C and AssemblyScript examples, as
// a WASI 0.2 component for gateways. Reads the data input `readings` (CSV lines
// `timestamp,value`) from /inputs/readings and prints
// `count=N min=X max=Y mean=Z skipped=S`. Blank lines and `#` comments are ignored;
// lines whose value is not a number, or longer than 128 bytes, are skipped. A missing
// input or a read error is a failure (WASI 0.2's exit carries no number).
//
// Built by ComponentizeJS (npm: @bytecodealliance/componentize-js), which puts the
// program into the SpiderMonkey engine; the file and console calls are WASI 0.2's own
// interfaces, imported by name (see wit/world.wit).
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import { getStdout } from "wasi:cli/stdout@0.2.12";
import { getStderr } from "wasi:cli/stderr@0.2.12";

const MAX_LINE = 128;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function write(stream, text) {
  const bytes = new TextEncoder().encode(text);
  // A blocking write takes at most 4096 bytes at a time.
  for (let at = 0; at < bytes.length; at += 4096) {
    stream.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
  }
}

function fail(message) {
  write(getStderr(), `${message}\n`);
  throw new Error(message);
}

class Stats {
  count = 0;
  skipped = 0;
  min = 0;
  max = 0;
  sum = 0;

  line(bytes) {
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes).trim();
    } catch {
      this.skipped++;
      return;
    }
    if (text === "" || text.startsWith("#")) return;
    const comma = text.indexOf(",");
    const value = comma < 0 ? "" : text.slice(comma + 1).trim();
    const v = NUMBER.test(value) ? Number(value) : NaN;
    if (!Number.isFinite(v)) {
      this.skipped++;
      return;
    }
    if (this.count === 0) {
      this.min = v;
      this.max = v;
    } else {
      this.min = Math.min(this.min, v);
      this.max = Math.max(this.max, v);
    }
    this.count++;
    this.sum += v;
  }
}

/** Opens `name` among the job's inputs (the preopened `/inputs`), or null. */
function openInput(name) {
  const inputs = getDirectories().find(([, path]) => path === "/inputs");
  if (!inputs) return null;
  try {
    return inputs[0].openAt({}, name, {}, { read: true });
  } catch {
    return null;
  }
}

/** Reads the stream to its end, calling `onLine` with each line's bytes (at most
 * MAX_LINE of them; longer lines are counted by `onOverlong`). */
function lines(stream, onLine, onOverlong) {
  const line = new Uint8Array(MAX_LINE);
  let length = 0;
  let overlong = false;
  const end = () => {
    if (overlong) onOverlong();
    else onLine(line.subarray(0, length));
    length = 0;
    overlong = false;
  };
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (error) {
      if (error?.payload?.tag === "closed") break;
      fail("cannot read the data input `readings`");
    }
    for (const byte of chunk) {
      if (byte === 0x0a) end();
      else if (length < MAX_LINE) line[length++] = byte;
      else overlong = true;
    }
  }
  if (overlong || length > 0) end();
}

export const run = {
  run() {
    const file = openInput("readings");
    if (!file) fail("data input `readings` is not available");
    const stats = new Stats();
    lines(file.readViaStream(0n), (bytes) => stats.line(bytes), () => stats.skipped++);
    write(getStderr(), `read ${stats.count} readings, skipped ${stats.skipped} lines\n`);
    if (stats.count === 0) {
      write(getStdout(), `count=0 skipped=${stats.skipped}`);
    } else {
      const mean = (stats.sum / stats.count).toFixed(3);
      write(getStdout(), `count=${stats.count} min=${stats.min} max=${stats.max} mean=${mean} skipped=${stats.skipped}`);
    }
  },
};
