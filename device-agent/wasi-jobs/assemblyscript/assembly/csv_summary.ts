// csv-summary in AssemblyScript: the same job as the Rust and C examples. Reads the data
// input `readings` (CSV lines `timestamp,value`) from /inputs/readings through WASI and
// prints `count=N min=X max=Y mean=Z skipped=S`. Blank lines and `#` comments are
// ignored; lines whose value is not a number, or longer than 128 bytes, are skipped.
// Exit codes: 2 = input `readings` not available, 3 = read error.
//
// Built with the AssemblyScript compiler and its WASI shim (npm: assemblyscript,
// @assemblyscript/wasi-shim) and the stub runtime (a bump allocator: 14 KB, so it fits
// a microcontroller's 16 KiB module limit); the file calls are the shim's bindings of
// WASI itself, the console output its `process.stdout` and `process.stderr`.
import {
  errno,
  fd,
  fd_close,
  fd_prestat_dir_name,
  fd_prestat_get,
  fd_read,
  path_open,
  prestat,
  prestat_dir,
  rights,
} from "@assemblyscript/wasi-shim/assembly/bindings/wasi_snapshot_preview1";

const MAX_LINE = 128;
const INPUTS = "/inputs";

/** The preopened directory named `name`, or -1. */
function preopened(name: string): i32 {
  const info = new prestat_dir();
  const want = String.UTF8.encode(name);
  for (let dir: fd = 3; dir < 64; dir++) {
    if (fd_prestat_get(dir, changetype<prestat>(info)) != errno.SUCCESS) break;
    if (<i32>info.name_len != want.byteLength) continue;
    const got = new ArrayBuffer(<i32>info.name_len);
    if (fd_prestat_dir_name(dir, changetype<usize>(got), info.name_len) != errno.SUCCESS) continue;
    if (String.UTF8.decode(got) == name) return <i32>dir;
  }
  return -1;
}

/** Opens `name` in the inputs directory for reading, or -1. */
function openInput(name: string): i32 {
  const dir = preopened(INPUTS);
  if (dir < 0) return -1;
  const path = String.UTF8.encode(name);
  const opened = memory.data(4);
  const result = path_open(
    <fd>dir, 0, changetype<usize>(path), path.byteLength, 0, rights.FD_READ, 0, 0, opened,
  );
  return result == errno.SUCCESS ? <i32>load<u32>(opened) : -1;
}

function isSpace(c: i32): bool {
  return c == 0x20 || (c >= 0x09 && c <= 0x0d);
}

function trim(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isSpace(s.charCodeAt(start))) start++;
  while (end > start && isSpace(s.charCodeAt(end - 1))) end--;
  return s.substring(start, end);
}

function isDigit(c: i32): bool {
  return c >= 0x30 && c <= 0x39;
}

/** A decimal number, strictly: `[+-]digits[.digits][e[+-]digits]`; NaN otherwise. */
function parseNumber(s: string): f64 {
  let i = 0;
  const n = s.length;
  if (i < n && (s.charCodeAt(i) == 0x2b || s.charCodeAt(i) == 0x2d)) i++;
  let digits = 0;
  while (i < n && isDigit(s.charCodeAt(i))) { i++; digits++; }
  if (i < n && s.charCodeAt(i) == 0x2e) {
    i++;
    while (i < n && isDigit(s.charCodeAt(i))) { i++; digits++; }
  }
  if (digits == 0) return NaN;
  if (i < n && (s.charCodeAt(i) | 0x20) == 0x65) {
    i++;
    if (i < n && (s.charCodeAt(i) == 0x2b || s.charCodeAt(i) == 0x2d)) i++;
    let exponent = 0;
    while (i < n && isDigit(s.charCodeAt(i))) { i++; exponent++; }
    if (exponent == 0) return NaN;
  }
  return i == n ? parseFloat(s) : NaN;
}

/** A value as the Rust example prints it: the shortest form, no `.0` on integers. */
function show(v: f64): string {
  const s = v.toString();
  return s.endsWith(".0") ? s.substring(0, s.length - 2) : s;
}

/** Three decimals, as `{:.3}` / `%.3f`. */
function fixed3(v: f64): string {
  const negative = v < 0;
  const thousandths = <u64>Math.round(Math.abs(v) * 1000);
  const fraction = (thousandths % 1000).toString();
  return (negative ? "-" : "") + (thousandths / 1000).toString() + "." + "000".substring(fraction.length) + fraction;
}

// The running summary: plain globals, not heap objects, because every line's strings
// are freed at once after the line (below).
let count: u64 = 0;
let skipped: u64 = 0;
let min: f64 = 0;
let max: f64 = 0;
let sum: f64 = 0;

function summarise(text: string): void {
  const line = trim(text);
  if (line.length == 0 || line.startsWith("#")) return;
  const comma = line.indexOf(",");
  const v = comma < 0 ? NaN : parseNumber(trim(line.substring(comma + 1)));
  if (!isFinite(v)) {
    skipped++;
    return;
  }
  if (count == 0) {
    min = v;
    max = v;
  } else {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  count++;
  sum += v;
}

// Static buffers: a chunk of the input, its iovec, one line.
const CHUNK = 512;
const chunk = memory.data(CHUNK);
const vec = memory.data(8);
const got = memory.data(4);
const lineBuf = memory.data(MAX_LINE);

/** Summarises the line in `lineBuf`, then frees what that made: the stub runtime's heap
 * goes back to where it was before the first line, so memory stays one page however long
 * the input is. */
function endLine(length: i32, overlong: bool): void {
  if (overlong) skipped++;
  else summarise(String.UTF8.decodeUnsafe(lineBuf, length));
  __reset();
}

function main(): void {
  const input = openInput("readings");
  if (input < 0) {
    process.stderr.write("data input `readings` is not available\n");
    process.exit(2);
  }
  store<u32>(vec, <u32>chunk);
  store<u32>(vec, CHUNK, 4);
  let length = 0;
  let overlong = false;
  while (true) {
    if (fd_read(<fd>input, vec, 1, got) != errno.SUCCESS) process.exit(3);
    const n = <i32>load<u32>(got);
    if (n == 0) break;
    for (let i = 0; i < n; i++) {
      const c = load<u8>(chunk + i);
      if (c == 0x0a) {
        endLine(length, overlong);
        length = 0;
        overlong = false;
      } else if (length < MAX_LINE) {
        store<u8>(lineBuf + length, c);
        length++;
      } else {
        overlong = true;
      }
    }
  }
  if (overlong || length > 0) endLine(length, overlong);
  fd_close(<fd>input);
  process.stderr.write(`read ${count} readings, skipped ${skipped} lines\n`);
  if (count == 0) {
    process.stdout.write(`count=0 skipped=${skipped}`);
  } else {
    const mean = sum / <f64>count;
    process.stdout.write(`count=${count} min=${show(min)} max=${show(max)} mean=${fixed3(mean)} skipped=${skipped}`);
  }
}

main();
