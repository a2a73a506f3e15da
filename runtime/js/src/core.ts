// kdedge bundle format v2 reader: everything except file access and the ONNX Runtime flavour.
// The contract is docs/bundle.md, "Version 2" (code points in, calibrated probabilities out).

import {
  MAX_CODE_POINT, MAX_DESCRIPTION_CHARS, MAX_DROPPED_RANGES, MAX_FILE_BYTES, MAX_FILES, MAX_GOLDEN_TEXTS,
  MAX_GOLDEN_TOLERANCE, MAX_INT_DIGITS, MAX_JSON_DEPTH, MAX_LABEL_CHARS, MAX_LABELS, MAX_MANIFEST_BYTES, MAX_MODELS,
  MAX_TEMPERATURE, MAX_TEXT_INPUT, MAX_VOCAB, MAX_WINDOWS, MIN_TEMPERATURE, MIN_VOCAB, MODEL_FORMATS, WINDOW_POOLS,
} from "./limits.js";

// The limits both readers check (docs/bundle.md "Limits"), written from runtime/kdedge_run/limits.json at build.
export * from "./limits.js";

export const FORMAT = "kdedge-bundle";
export const FORMAT_VERSION = 2;
export const MANIFEST = "manifest.json";
/** vocab.txt's first two lines (ids 0 and 1). */
const PAD_TOKEN = "<pad>";
const OOV_TOKEN = "<oov>";
/**
 * Texts per model run in a batch prediction (probabilities do not depend on the batch). The texts of
 * one predict() call are sorted by length before they are cut into batches: the model trims the padding
 * after the batch's longest text, so a batch costs about its size times its longest text.
 */
export const BATCH_SIZE = 64;

/** A bundle cannot be used; the message names the file and the problem. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BundleError";
  }
}

export interface FileEntry {
  sha256: string;
  bytes: number;
}

export interface ModelEntry {
  format: string;
  file: string;
  precision?: string;
  input_shape: [number | null, number];
  input_name: string;
  input_dtype: "int32";
  outputs: { probabilities: string; known: string; attention?: string | null };
}

/**
 * How a text longer than max_len is read (docs/bundle.md "Long texts (windows)"): windows of `size` (= max_len) code
 * points starting every `stride` code points, at most `max_windows`; each label's probability is pooled
 * over the windows by `pool` ("max"). Optional in the manifest: without it a text is one window (its first
 * max_len code points), as before the rule existed.
 */
export interface WindowRule {
  size: number;
  stride: number;
  max_windows: number;
  pool: "max";
}

export interface InputSpec {
  kind: "codepoints";
  dtype: "int32";
  max_len: number;
  pad: number;
  dropped: [number, number][];
  windows?: WindowRule;
}

export interface Manifest {
  format: string;
  format_version: number;
  labels: string[];
  thresholds: number[];
  calibration: { method: "temperature"; temperatures: number[]; in_graph: true };
  input: InputSpec;
  abstain: { min_coverage: number };
  vocab: { file: string; size: number };
  label_descriptions?: Record<string, string>;
  golden?: { file: string; texts: number; tolerance: number } | null;
  models: ModelEntry[];
  files: Record<string, FileEntry>;
  [key: string]: unknown;
}

/** One text's result (docs/bundle.md v2, "What the app does"). */
export interface Prediction {
  /** Labels with probability >= their threshold, most probable first; none when not judged. */
  labels: string[];
  /** Every label's calibrated probability (an object without prototype: a label named "__proto__",
   * "constructor" or "toString" is an own key like any other). */
  probabilities: Record<string, number>;
  /** Code points were left unread: more remained after the last one the window rule reads (the first
   * max_len without a rule). A text read whole is never truncated. */
  truncated: boolean;
  /** Code points read (after dropping; all windows together, each once). */
  tokens: number;
  /** How many of the code points read were in the vocabulary (the model's `known` output), summed over the
   * windows: a code point read by two windows counts twice (so known may exceed tokens when windows > 1). */
  known: number;
  /** known / (code points read by each window, summed): tokens when windows is 1. */
  coverage: number;
  /** known > 0 and coverage >= abstain.min_coverage. */
  judged: boolean;
  /** Model rows the text was read as (1 for a text of at most max_len code points). */
  windows: number;
}

export interface Encoded {
  /** The first window's model row: code points, padded with `input.pad` (0) to exactly max_len. */
  codepoints: Int32Array;
  /** Every window's model row (docs/bundle.md "Long texts (windows)"); rows[0] is `codepoints`. */
  rows: Int32Array[];
  /** Code points read (all windows together, each once). */
  tokens: number;
  /** Code points remained after the last one read. */
  truncated: boolean;
}

export interface PredictOptions {
  /** One threshold for every label instead of the manifest's `thresholds`. */
  threshold?: number;
  /** Keep at most the k most probable of the labels that pass. */
  k?: number;
}

// ---- the ONNX Runtime surface both onnxruntime-node and onnxruntime-web provide -------------------

export interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
  readonly type: string;
}

/** What a session says of one of its inputs or outputs (ONNX Runtime >= 1.21); a dimension is a number when
 * fixed, a name (or -1) when not. */
export interface OrtValueMetadata {
  readonly name: string;
  readonly shape?: readonly (number | string)[];
}

export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: readonly OrtValueMetadata[];
  readonly outputMetadata?: readonly OrtValueMetadata[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}

export interface OrtLike {
  InferenceSession: { create(model: Uint8Array, options?: object): Promise<OrtSession> };
  Tensor: new (type: "int32", data: Int32Array, dims: readonly number[]) => OrtTensor;
}

/**
 * How a flavour reads one bundle file (a relative path from manifest.files, or manifest.json): its bytes, of which
 * the reader accepts at most `limit` (manifest.json: MAX_MANIFEST_BYTES; a listed file: its manifest `bytes`). A
 * flavour that learns the file is larger (its size on disk, a Content-Length, or while reading) stops and throws
 * FileTooLarge, so that a huge file is never read whole; the reader checks the size of what it gets in any case.
 */
export type ReadFile = (rel: string, limit: number) => Promise<Uint8Array>;

/** Thrown by a ReadFile for a file of more bytes than its `limit`: `size`, when the flavour knows it. */
export class FileTooLarge extends Error {
  readonly size: number | undefined;

  constructor(size?: number) {
    super(size === undefined ? "file too large" : `file of ${size} bytes too large`);
    this.name = "FileTooLarge";
    this.size = size;
  }
}

// ---- manifest and files ---------------------------------------------------------------------

function fail(message: string): never {
  throw new BundleError(message);
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function isInt(x: unknown, low: number, high: number): x is number {
  return typeof x === "number" && Number.isInteger(x) && x >= low && x <= high;
}

function isNumberIn(x: unknown, low: number, high: number): x is number {
  return typeof x === "number" && Number.isFinite(x) && x >= low && x <= high;
}

/** UTF-8 `bytes` as text, strictly: invalid UTF-8 throws, and a byte order mark stays in the text (where JSON
 * refuses it, as Python's json does). */
function decodeUtf8(bytes: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
}

/** A place in a JSON value, as a key of the set parseJson returns: its keys and indices from the top. */
function place(...keys: (string | number)[]): string {
  return JSON.stringify(keys);
}

/**
 * Read `text` as one JSON value as both readers read a bundle's JSON (docs/bundle.md "Limits"): JSON.parse, then
 * what it does not check: nesting at most MAX_JSON_DEPTH deep, integers of at most MAX_INT_DIGITS digits. Also
 * returns the places (place()) of the numbers written with a fraction or an exponent ("128.0", "1e2"): JSON.parse
 * reads them as integers, kdedge_run (Python's json) as floats, and an integer field refuses them. Throws an Error
 * naming the problem.
 */
function parseJson(text: string): { value: unknown; fractions: ReadonlySet<string> } {
  const value: unknown = JSON.parse(text);
  // `text` is valid JSON: walk its tokens, keeping the place of each value
  const fractions = new Set<string>();
  const path: (string | number)[] = [];
  const arrays: boolean[] = []; // open containers, innermost last: true for an array
  let key = false; // the next string is an object key
  for (let i = 0; i < text.length;) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // a string: to its closing quote (one not escaped by an odd run of backslashes)
      let end = i;
      for (;;) {
        end = text.indexOf('"', end + 1);
        let slashes = 0;
        while (text.charCodeAt(end - 1 - slashes) === 0x5c) slashes++;
        if (slashes % 2 === 0) break;
      }
      if (key) path[path.length - 1] = JSON.parse(text.slice(i, end + 1)) as string;
      key = false;
      i = end + 1;
    } else if (c === 0x7b || c === 0x5b) { // { [
      if (arrays.length === MAX_JSON_DEPTH) throw new Error(`nested too deeply (more than ${MAX_JSON_DEPTH} levels)`);
      arrays.push(c === 0x5b);
      path.push(c === 0x5b ? 0 : "");
      key = c === 0x7b;
      i++;
    } else if (c === 0x7d || c === 0x5d) { // } ]
      arrays.pop();
      path.pop();
      key = false;
      i++;
    } else if (c === 0x2c) { // , : the next element or key
      if (arrays[arrays.length - 1]) (path[path.length - 1] as number)++;
      else key = true;
      i++;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) { // a number
      let end = i + 1, fraction = false;
      for (let d = text.charCodeAt(end); (d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d; d = text.charCodeAt(++end)) {
        if (d === 0x2e || d === 0x65 || d === 0x45) fraction = true;
      }
      if (fraction) {
        fractions.add(place(...path));
      } else {
        const digits = end - i - (c === 0x2d ? 1 : 0);
        if (digits > MAX_INT_DIGITS) throw new Error(`an integer of ${digits} digits, more than ${MAX_INT_DIGITS}`);
        if (fractions.size > 0) fractions.delete(place(...path)); // a key given again: its last value counts
      }
      i = end;
    } else {
      i++; // whitespace, ':', true, false, null
    }
  }
  return { value, fractions };
}

/** Parse manifest.json bytes and check every value this reader uses. */
export function parseManifest(bytes: Uint8Array): Manifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    fail(`${MANIFEST}: ${bytes.byteLength} bytes, more than the ${MAX_MANIFEST_BYTES} a manifest may have`);
  }
  let parsed: ReturnType<typeof parseJson>;
  try {
    parsed = parseJson(decodeUtf8(bytes));
  } catch (e) {
    fail(`${MANIFEST}: not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  checkManifest(parsed.value, parsed.fractions);
  return parsed.value;
}

/** A value in a message: JSON, at most 60 characters. */
function short(x: unknown): string {
  const text = JSON.stringify(x) ?? String(x);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Code points of `text` (a lone surrogate is one), as Python's len() counts a str. */
function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * Refuse anything but a well-formed format-version-2 manifest (errors name the key); the rules and limits are
 * kdedge_run's (docs/bundle.md "Limits"). `fractions`: the places of numbers written with a fraction or exponent
 * (parseJson), which an integer field refuses; empty for a manifest that was never JSON text.
 */
export function checkManifest(m: unknown, fractions: ReadonlySet<string> = new Set()): asserts m is Manifest {
  const ints: Integers = {
    is: (x, low, high, ...keys): x is number => isInt(x, low, high) && !fractions.has(place(...keys)),
    show: (x, ...keys) => {
      const at = place(...keys), inside = `${at.slice(0, -1)},`; // the place and the places within it
      const written = fractions.has(at) || [...fractions].some((f) => f.startsWith(inside));
      return `${short(x)}${written ? " (a number written with a fraction or exponent)" : ""}`;
    },
  };
  if (!isObject(m) || m.format !== FORMAT) {
    fail(`${MANIFEST}: not a kdedge bundle (expected "format": "${FORMAT}", got ${short(isObject(m) ? m.format : m)})`);
  }
  if (!ints.is(m.format_version, FORMAT_VERSION, FORMAT_VERSION, "format_version")) {
    fail(`${MANIFEST}: format_version ${ints.show(m.format_version, "format_version")} ` +
      `is not supported (this reader reads format_version ${FORMAT_VERSION} only)`);
  }
  for (const [key, kind] of [["files", "object"], ["labels", "array"], ["thresholds", "array"], ["calibration", "object"],
    ["input", "object"], ["vocab", "object"], ["embeddings", "object"], ["segmenter", "object"], ["models", "array"]]) {
    if (kind === "object" ? !isObject(m[key]) : !Array.isArray(m[key])) fail(`${MANIFEST}: '${key}' missing or not a JSON ${kind}`);
  }
  const files = m.files as Record<string, unknown>;
  const names = Object.keys(files);
  if (names.length > MAX_FILES) fail(`${MANIFEST}: 'files' lists ${names.length} files, more than ${MAX_FILES}`);
  for (const rel of names) {
    checkPath(rel);
    const meta = files[rel];
    if (!isObject(meta) || typeof meta.sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(meta.sha256) ||
        !ints.is(meta.bytes, 0, MAX_FILE_BYTES, "files", rel, "bytes")) {
      fail(`${MANIFEST}: entry for ${rel} needs 'sha256' (64 hex digits) and 'bytes' (int, 0 to ${MAX_FILE_BYTES})`);
    }
  }
  const listed = (rel: unknown): rel is string => typeof rel === "string" && Object.hasOwn(files, rel);
  checkCommon(m, listed, ints);
  checkInput(m.input as Record<string, unknown>, ints);
  const calibration = m.calibration as Record<string, unknown>;
  if (calibration.in_graph !== true) {
    fail(`${MANIFEST}: version 2 calibration.in_graph must be true (the model applies the temperatures), got ${short(calibration.in_graph)}`);
  }
  const vocab = m.vocab as Record<string, unknown>;
  if (!ints.is(vocab.size, MIN_VOCAB, MAX_VOCAB, "vocab", "size")) {
    fail(`${MANIFEST}: vocab.size must be an integer >= ${MIN_VOCAB} of at most ${MAX_VOCAB}, got ${ints.show(vocab.size, "vocab", "size")}`);
  }
  if (!listed(vocab.file)) fail(`${MANIFEST}: vocab.file ${short(vocab.file)} is not a file listed in 'files'`);
  const models = m.models as unknown[];
  if (models.length === 0 || models.length > MAX_MODELS) fail(`${MANIFEST}: 'models' must list 1 to ${MAX_MODELS} models`);
  const maxLen = (m.input as InputSpec).max_len;
  models.forEach((e, i) => {
    if (!isObject(e) || !MODEL_FORMATS.includes(e.format as string)) {
      fail(`${MANIFEST}: models[${i}] ${short(e)} has no known format (${MODEL_FORMATS.join(", ")})`);
    }
    if (!listed(e.file)) fail(`${MANIFEST}: models[${i}].file ${short(e.file)} is not a file listed in 'files'`);
    const outputs = e.outputs;
    if (typeof e.input_name !== "string" || e.input_dtype !== "int32" || !isObject(outputs) ||
        typeof outputs.probabilities !== "string" || typeof outputs.known !== "string" ||
        !(outputs.attention === undefined || outputs.attention === null || typeof outputs.attention === "string")) {
      fail(`${MANIFEST}: models[${i}]: needs input_name, input_dtype "int32" and outputs {probabilities: string, ` +
        "known: string, attention: string or null}");
    }
    const shape = e.input_shape;
    if (!(Array.isArray(shape) && shape.length === 2 && (shape[0] === null || ints.is(shape[0], 1, 1, "models", i, "input_shape", 0)) &&
        ints.is(shape[1], maxLen, maxLen, "models", i, "input_shape", 1))) {
      fail(`${e.file}: manifest input_shape ${ints.show(shape, "models", i, "input_shape")} does not match [batch (null or 1), input.max_len = ${maxLen}]`);
    }
  });
}

/** The integer fields of a manifest read from JSON text (checkManifest). */
interface Integers {
  /** `x`, at `keys` (its place), an integer in [low, high] written as one: no fraction, no exponent. */
  is(x: unknown, low: number, high: number, ...keys: (string | number)[]): x is number;
  /** `x`, at `keys`, in a message (saying when it holds a number written with a fraction or exponent). */
  show(x: unknown, ...keys: (string | number)[]): string;
}

/** Labels, thresholds, temperatures, abstention, golden entry and label descriptions (kdedge_run's _check_common,
 * with version 2's abstain required). */
function checkCommon(m: Record<string, unknown>, listed: (rel: unknown) => rel is string, ints: Integers): void {
  const labels = m.labels as unknown[];
  if (labels.length === 0 || !labels.every((x) => typeof x === "string" && x !== "") || new Set(labels).size !== labels.length) {
    fail(`${MANIFEST}: 'labels' must be a non-empty list of distinct strings`);
  }
  if (labels.length > MAX_LABELS || labels.some((x) => codePoints(x as string) > MAX_LABEL_CHARS)) {
    fail(`${MANIFEST}: 'labels' may hold at most ${MAX_LABELS} names of at most ${MAX_LABEL_CHARS} characters`);
  }
  const n = labels.length;
  const calibration = m.calibration as Record<string, unknown>;
  if (calibration.method !== "temperature") {
    fail(`${MANIFEST}: calibration method ${short(calibration.method)} unknown (expected "temperature")`);
  }
  for (const [key, values] of [["thresholds", m.thresholds], ["calibration.temperatures", calibration.temperatures]] as const) {
    if (!Array.isArray(values) || values.length !== n) fail(`${MANIFEST}: '${key}' must list one number per label (${n})`);
  }
  (calibration.temperatures as unknown[]).forEach((t, i) => {
    if (!isNumberIn(t, MIN_TEMPERATURE, MAX_TEMPERATURE)) {
      fail(`${MANIFEST}: temperatures must be finite and > 0 (within [${MIN_TEMPERATURE}, ${MAX_TEMPERATURE}]); ` +
        `calibration.temperatures[${i}] is ${short(t)}`);
    }
  });
  (m.thresholds as unknown[]).forEach((t, i) => {
    if (!isNumberIn(t, 0, 1)) fail(`${MANIFEST}: thresholds must be within [0, 1]; thresholds[${i}] is ${short(t)}`);
  });
  const abstain = m.abstain;
  if (!isObject(abstain) || !isNumberIn(abstain.min_coverage, 0, 1)) {
    fail(`${MANIFEST}: version 2 needs 'abstain': {"min_coverage": a number in [0, 1]}, got ${short(abstain)}`);
  }
  const golden = m.golden;
  if (golden !== undefined && golden !== null && !(isObject(golden) && listed(golden.file) &&
      ints.is(golden.texts, 1, MAX_GOLDEN_TEXTS, "golden", "texts") && isNumberIn(golden.tolerance, 0, MAX_GOLDEN_TOLERANCE) &&
      golden.tolerance > 0)) {
    fail(`${MANIFEST}: 'golden' must be {"file": a file listed in 'files', "texts": 1 to ${MAX_GOLDEN_TEXTS}, ` +
      `"tolerance": a number in (0, ${MAX_GOLDEN_TOLERANCE}]}`);
  }
  const descriptions = m.label_descriptions;
  const known = new Set(labels);
  if (descriptions !== undefined && descriptions !== null && (!isObject(descriptions) ||
      !Object.entries(descriptions).every(([label, text]) => known.has(label) && typeof text === "string" &&
        codePoints(text) <= MAX_DESCRIPTION_CHARS))) {
    fail(`${MANIFEST}: 'label_descriptions' must map labels of 'labels' to strings of at most ${MAX_DESCRIPTION_CHARS} characters`);
  }
}

/** Version 2's `input`: code points (kind, dtype, pad), max_len, the dropped ranges, the window rule. */
function checkInput(input: Record<string, unknown>, ints: Integers): void {
  if (input.kind !== "codepoints" || input.dtype !== "int32" || !ints.is(input.pad, 0, 0, "input", "pad")) {
    fail(`${MANIFEST}: version 2 input must be kind "codepoints", dtype "int32", pad 0; got kind ${short(input.kind)}, ` +
      `dtype ${short(input.dtype)}, pad ${ints.show(input.pad, "input", "pad")}`);
  }
  if (!ints.is(input.max_len, 1, MAX_TEXT_INPUT, "input", "max_len")) {
    fail(`${MANIFEST}: input.max_len must be a positive integer of at most ${MAX_TEXT_INPUT}, got ${ints.show(input.max_len, "input", "max_len")}`);
  }
  const dropped = input.dropped;
  if (!Array.isArray(dropped) || dropped.length > MAX_DROPPED_RANGES) {
    fail(`${MANIFEST}: input.dropped must be a list of at most ${MAX_DROPPED_RANGES} ranges`);
  }
  let last = -1;
  dropped.forEach((r: unknown, i) => {
    if (!(Array.isArray(r) && r.length === 2 && ints.is(r[0], last + 1, MAX_CODE_POINT, "input", "dropped", i, 0) &&
        ints.is(r[1], r[0], MAX_CODE_POINT, "input", "dropped", i, 1))) {
      fail(`${MANIFEST}: input.dropped[${i}] ${ints.show(r, "input", "dropped", i)} is not an inclusive [first, last] code point range after the ` +
        `previous one (0 to 0x${MAX_CODE_POINT.toString(16)})`);
    }
    last = r[1];
  });
  if (dropped.length === 0 || dropped[0][0] !== 0) fail(`${MANIFEST}: input.dropped must start at code point 0 (the padding)`);
  checkWindows(input.windows, input.max_len, ints);
}

/** `input.windows`, when present: size = max_len, 1 <= stride <= size, 1 <= max_windows <= MAX_WINDOWS (and at
 * most MAX_TEXT_INPUT code points read), pool a known rule (kdedge_run's checks). */
function checkWindows(w: unknown, maxLen: number, ints: Integers): void {
  if (w === undefined || w === null) return;
  if (!isObject(w)) fail(`${MANIFEST}: input.windows must be an object {size, stride, max_windows, pool}, got ${short(w)}`);
  if (!ints.is(w.size, maxLen, maxLen, "input", "windows", "size")) {
    fail(`${MANIFEST}: input.windows.size must equal input.max_len (${maxLen}), got ${ints.show(w.size, "input", "windows", "size")}`);
  }
  if (!ints.is(w.stride, 1, maxLen, "input", "windows", "stride")) {
    fail(`${MANIFEST}: input.windows.stride must be a positive integer of at most ${maxLen}, got ${ints.show(w.stride, "input", "windows", "stride")}`);
  }
  if (!ints.is(w.max_windows, 1, MAX_WINDOWS, "input", "windows", "max_windows")) {
    fail(`${MANIFEST}: input.windows.max_windows must be a positive integer of at most ${MAX_WINDOWS}, got ${ints.show(w.max_windows, "input", "windows", "max_windows")}`);
  }
  const reach = maxLen + (w.max_windows - 1) * w.stride;
  if (reach > MAX_TEXT_INPUT) fail(`${MANIFEST}: input.windows reads up to ${reach} code points per text, more than ${MAX_TEXT_INPUT}`);
  if (!WINDOW_POOLS.includes(w.pool as string)) {
    fail(`${MANIFEST}: input.windows.pool ${short(w.pool)} unknown (this reader pools by ${WINDOW_POOLS.join(", ")}); upgrade @kdedge/reader`);
  }
}

/** A manifest.files key must be a plain relative path inside the bundle. */
function checkPath(rel: string): void {
  const parts = rel.split("/");
  if (rel === "" || rel.startsWith("/") || rel.includes("\\") || parts[0].includes(":") ||
      parts.some((p) => p === "" || p === "." || p === "..")) {
    fail(`${rel}: path leaves the bundle directory or is not a plain relative path`);
  }
  if (rel === MANIFEST) fail(`${MANIFEST}: must not list itself in 'files'`);
}

/** Lower-case hex SHA-256 of `bytes` (WebCrypto: Node >= 19 and browsers in secure contexts). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  if (!globalThis.crypto?.subtle) {
    throw new BundleError("WebCrypto (crypto.subtle) is unavailable: Node >= 19, or a page served from https or localhost");
  }
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}

/**
 * `readFile(rel, limit)`: a file of more than `limit` bytes (FileTooLarge, or more bytes returned) is refused with
 * `tooLarge(its size)`, one that cannot be read with `unreadable(the error)`.
 */
async function readBounded(readFile: ReadFile, rel: string, limit: number, tooLarge: (size: string) => string,
                           unreadable: (e: Error) => string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(rel, limit);
  } catch (e) {
    if (e instanceof BundleError) throw e;
    if (e instanceof FileTooLarge) fail(tooLarge(e.size === undefined ? `more than ${limit}` : String(e.size)));
    fail(unreadable(e as Error));
  }
  if (bytes.byteLength > limit) fail(tooLarge(String(bytes.byteLength)));
  return bytes;
}

/** Read every file in manifest.files (none beyond its listed size), check its size and SHA-256; returns the bytes
 * by path. */
export async function verifyFiles(manifest: Manifest, readFile: ReadFile): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [rel, meta] of Object.entries(manifest.files)) {
    const tooLarge = (size: string) => `${rel}: size ${size} bytes, manifest says ${meta.bytes}`;
    const bytes = await readBounded(readFile, rel, meta.bytes, tooLarge,
      (e) => `${rel}: missing or unreadable (listed in manifest.json 'files'): ${e.message}`);
    if (bytes.byteLength !== meta.bytes) fail(tooLarge(String(bytes.byteLength)));
    if ((await sha256Hex(bytes)) !== meta.sha256.toLowerCase()) fail(`${rel}: SHA-256 mismatch (file changed or corrupt)`);
    out.set(rel, bytes);
  }
  return out;
}

/** vocab.txt (manifest vocab.file, verified): vocab.size lines, <pad> and <oov> first, no token twice. The graph
 * holds the lookup; the file says what it is, and both readers refuse one that disagrees. */
function checkVocab(manifest: Manifest, files: Map<string, Uint8Array>): void {
  const rel = manifest.vocab.file;
  let text: string;
  try {
    text = decodeUtf8(files.get(rel)!);
  } catch (e) {
    fail(`${rel}: cannot read: ${(e as Error).message}`);
  }
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== manifest.vocab.size) fail(`${rel}: ${lines.length} tokens, manifest vocab.size says ${manifest.vocab.size}`);
  if (lines[0] !== PAD_TOKEN || lines[1] !== OOV_TOKEN) fail(`${rel}: lines 0 and 1 must be ${PAD_TOKEN} and ${OOV_TOKEN}`);
  if (new Set(lines).size !== lines.length) fail(`${rel}: duplicate tokens`);
}

// ---- text → model input ------------------------------------------------------------------------

/** Whether `cp` lies in one of the `dropped` ranges (sorted and disjoint: checked at load), by binary search. */
function inDropped(cp: number, dropped: readonly (readonly [number, number])[]): boolean {
  let low = 0, high = dropped.length - 1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    const [first, last] = dropped[mid];
    if (cp < first) high = mid - 1;
    else if (cp > last) low = mid + 1;
    else return true;
  }
  return false;
}

/** The input's window rule: `input.windows`, or one window of max_len code points when the manifest has none. */
export function windowRule(input: Pick<InputSpec, "max_len" | "windows">): WindowRule {
  return input.windows ?? { size: input.max_len, stride: input.max_len, max_windows: 1, pool: "max" };
}

/** Code points a window rule reads at most: the first size + (max_windows - 1) × stride. */
export function windowReach(rule: WindowRule): number {
  return rule.size + (rule.max_windows - 1) * rule.stride;
}

/**
 * [start, end) of each window over `n` code points read (n <= windowReach): one window when n <= size, else
 * 1 + ceil((n - size) / stride); window k holds code points k × stride up to min(k × stride + size, n).
 */
export function windowSpans(n: number, rule: WindowRule): [number, number][] {
  const count = n <= rule.size ? 1 : Math.min(rule.max_windows, 1 + Math.ceil((n - rule.size) / rule.stride));
  const out: [number, number][] = [];
  for (let k = 0; k < count; k++) out.push([k * rule.stride, Math.min(k * rule.stride + rule.size, n)]);
  return out;
}

/** Code points of `text` as the model reads them (one row per window), with the count read and whether more remained. */
export function encodeText(text: string, manifest: Pick<Manifest, "input">): Encoded {
  if (typeof text !== "string") throw new TypeError(`text must be a string, got ${typeof text}`);
  const { max_len: maxLen, dropped } = manifest.input;
  const rule = windowRule(manifest.input);
  const reach = windowReach(rule);
  const read: number[] = [];
  let truncated = false;
  for (const ch of text) { // code points, not UTF-16 units; a lone surrogate is its own code point
    const cp = ch.codePointAt(0)!;
    if (inDropped(cp, dropped)) continue;
    if (read.length === reach) {
      truncated = true;
      break;
    }
    read.push(cp);
  }
  const rows = windowSpans(read.length, rule).map(([start, end]) => {
    const row = new Int32Array(maxLen); // 0 = padding
    for (let j = start; j < end; j++) row[j - start] = read[j];
    return row;
  });
  return { codepoints: rows[0], rows, tokens: read.length, truncated };
}

/** Input positions of a model row that hold a code point (the row's code points read). */
function countFilled(row: Int32Array): number {
  let c = 0;
  for (const cp of row) if (cp !== 0) c++;
  return c;
}

/** The model input row for `text` (its first window): max_len code points, padded with 0 (compare with golden `codepoints`). */
export function encode(text: string, manifest: Pick<Manifest, "input">): number[] {
  return Array.from(encodeText(text, manifest).codepoints);
}

/** A text whose model outputs break the contract: its index and the BundleError message naming it. */
interface RowFault {
  index: number;
  message: string;
}

// ---- the classifier ----------------------------------------------------------------------------

/** The first `models` entry whose format is "onnx" (the format this reader runs). */
export function onnxEntry(manifest: Manifest): ModelEntry {
  const entry = manifest.models.find((e) => e.format === "onnx");
  if (!entry) fail(`${MANIFEST}: no model of format "onnx" in 'models' (this reader runs ONNX models only)`);
  return entry;
}

/** A model tensor's `shape` (from the session's metadata; absent: nothing to check) against `declared` by `what`
 * (null: any size): the same rank, and every fixed dimension equal to its declared size. */
function checkDims(file: string, tensor: string, shape: readonly (number | string)[] | undefined,
                   declared: readonly (number | null)[], what: string, bundle: string): void {
  if (shape === undefined) return;
  const fixed = (d: number | string) => typeof d === "number" && d >= 0;
  if (shape.length !== declared.length || shape.some((d, i) => fixed(d) && declared[i] !== null && d !== declared[i])) {
    fail(`${file}: model ${tensor} shape ${short(shape.map((d) => (fixed(d) ? d : null)))} does not match ${what} ` +
      `${short(declared)} (bundle ${bundle})`);
  }
}

export class Classifier {
  readonly manifest: Manifest;
  readonly labels: string[];
  readonly model: ModelEntry;
  /** Where the bundle came from (a directory or a URL), named in errors about the model's outputs. */
  readonly source: string;
  private readonly session: OrtSession;
  private readonly ort: OrtLike;

  constructor(manifest: Manifest, session: OrtSession, ort: OrtLike, source = "(bundle)") {
    this.manifest = manifest;
    this.labels = [...manifest.labels];
    this.model = onnxEntry(manifest);
    this.session = session;
    this.ort = ort;
    this.source = source;
    const { input_name: inputName, input_shape: inputShape, outputs, file } = this.model;
    if (session.inputNames.length !== 1 || session.inputNames[0] !== inputName) {
      fail(`${file}: model inputs ${JSON.stringify(session.inputNames)}, manifest input_name is ${JSON.stringify(inputName)}`);
    }
    for (const name of [outputs.probabilities, outputs.known, outputs.attention]) {
      if (typeof name === "string" && !session.outputNames.includes(name)) {
        fail(`${file}: model has no output named ${JSON.stringify(name)} (it has ${JSON.stringify(session.outputNames)})`);
      }
    }
    // the model's own shapes, where the session says them (as kdedge_run checks them)
    const shapeOf = (list: readonly OrtValueMetadata[] | undefined, name: string) => list?.find((x) => x.name === name)?.shape;
    const input = shapeOf(session.inputMetadata, inputName);
    checkDims(file, "input", input, inputShape, "manifest input_shape", source);
    if (input !== undefined && typeof input[0] === "number" && input[0] >= 0 && input[0] !== 1) {
      fail(`${file}: input batch must be dynamic or 1, found ${input[0]} (bundle ${source})`);
    }
    checkDims(file, `output ${outputs.probabilities}`, shapeOf(session.outputMetadata, outputs.probabilities),
      [null, manifest.labels.length], "[batch, labels]", source);
    checkDims(file, `output ${outputs.known}`, shapeOf(session.outputMetadata, outputs.known), [null], "[batch]", source);
  }

  /** Label descriptions from the manifest (empty when absent): an object without prototype, so a label
   * without a description is undefined, even one named "constructor" or "toString". */
  get labelDescriptions(): Record<string, string> {
    const out: Record<string, string> = Object.create(null);
    for (const [label, text] of Object.entries(this.manifest.label_descriptions ?? {})) out[label] = text;
    return out;
  }

  /** Classify one text (→ Prediction) or a list (→ Prediction[]); Error("empty text") when nothing is left after dropping. */
  predict(text: string, options?: PredictOptions): Promise<Prediction>;
  predict(texts: string[], options?: PredictOptions): Promise<Prediction[]>;
  async predict(text: string | string[], options: PredictOptions = {}): Promise<Prediction | Prediction[]> {
    if (typeof text === "string") return (await this.predictMany([text], options, false))[0];
    if (!Array.isArray(text)) throw new TypeError("predict takes a string or an array of strings");
    return this.predictMany(text, options, true);
  }

  private async predictMany(texts: string[], options: PredictOptions, indexed: boolean): Promise<Prediction[]> {
    const { threshold, k } = options;
    if (threshold !== undefined && !isNumberIn(threshold, 0, 1)) throw new RangeError(`threshold must be within [0, 1], got ${threshold}`);
    if (k !== undefined && !isInt(k, 1, Number.MAX_SAFE_INTEGER)) throw new RangeError(`k must be a positive integer, got ${k}`);
    const encoded = texts.map((t, i) => {
      let e: Encoded;
      try {
        e = encodeText(t, this.manifest);
      } catch (err) {
        throw indexed ? new TypeError(`text ${i}: ${(err as Error).message}`) : err;
      }
      if (e.tokens === 0) throw new Error(indexed ? `text ${i}: empty text` : "empty text");
      return e;
    });
    // Every window of every text is one model row (a text of at most max_len code points: one row).
    // Length-aware batching: sort the rows by code points read (stable: ties keep input order), cut the
    // sorted order into batches of BATCH_SIZE, and put each row's outputs back at its place. Short rows
    // then run with short rows, and no batch pays for a long row it does not hold.
    const owner: number[] = [];
    const rows: Int32Array[] = [];
    const first: number[] = []; // first[i]: the index of text i's first row
    encoded.forEach((e, i) => {
      first.push(rows.length);
      for (const row of e.rows) {
        owner.push(i);
        rows.push(row);
      }
    });
    const filled = rows.map(countFilled);
    const order = rows.map((_, j) => j);
    order.sort((a, b) => filled[a] - filled[b] || a - b);
    const n = this.labels.length;
    const probabilities = new Float32Array(rows.length * n);
    const known = new Int32Array(rows.length);
    let bad: RowFault | null = null; // the faulty text of smallest input index so far
    for (let start = 0; start < order.length; start += BATCH_SIZE) {
      const idx = order.slice(start, start + BATCH_SIZE);
      // after a fault, only a batch that holds an earlier text can change which text is named
      if (bad !== null && idx.every((j) => owner[j] > bad!.index)) continue;
      const r = await this.runRows(idx.map((j) => rows[j]), idx.map((j) => owner[j]), indexed);
      if (r.fault !== null) {
        if (bad === null || r.fault.index < bad.index) bad = r.fault;
        continue;
      }
      idx.forEach((j, b) => {
        probabilities.set(r.probabilities.subarray(b * n, (b + 1) * n), j * n);
        known[j] = r.known[b];
      });
    }
    if (bad !== null) fail(bad.message);
    return encoded.map((e, i) => this.decide(e, probabilities, known, filled, first[i], threshold, k));
  }

  /**
   * Run the model on rows of code points → probabilities [batch × n_labels] and known [batch].
   * The outputs are checked, not trusted: shapes [batch, n_labels] and [batch], every probability finite
   * and within [0, 1], 0 <= known <= the row's code points; anything else is a BundleError naming the
   * text and the bundle. `indices` says how texts are named (`text i: `): an array gives each row's
   * index (row j is text indices[j]), a number the first row's (row j is text indices + j); null: one
   * text, unnamed; omitted: a test input. When several rows are faulty, the one of smallest index is named.
   */
  async run(rows: Int32Array[], indices?: number | readonly number[] | null): Promise<{ probabilities: Float32Array; known: Int32Array }> {
    const { probabilities, known, fault } = await this.runRows(rows, indices);
    if (fault !== null) fail(fault.message);
    return { probabilities, known };
  }

  /** run() without the throw for a faulty row: the fault (smallest index) is returned; a wrong shape still throws.
   * `named` false: the message does not name the text (one text), though `indices` still orders the rows. */
  private async runRows(rows: Int32Array[], indices?: number | readonly number[] | null, named = true):
      Promise<{ probabilities: Float32Array; known: Int32Array; fault: RowFault | null }> {
    if (Array.isArray(indices) && indices.length !== rows.length) {
      throw new RangeError(`run: ${indices.length} indices for ${rows.length} rows`);
    }
    const maxLen = this.manifest.input.max_len;
    const n = this.labels.length;
    const batch = rows.length;
    const data = new Int32Array(batch * maxLen);
    rows.forEach((r, i) => data.set(r, i * maxLen));
    const feeds = { [this.model.input_name]: new this.ort.Tensor("int32", data, [batch, maxLen]) };
    const result = await this.session.run(feeds);
    const { probabilities: pName, known: kName, attention: aName } = this.model.outputs;
    const p = result[pName];
    const k = result[kName];
    const file = this.model.file;
    const faulty = `(faulty bundle ${this.source})`;
    const dims = (t: OrtTensor | undefined) => JSON.stringify(t?.dims === undefined ? null : Array.from(t.dims));
    const sameDims = (t: OrtTensor, want: number[]) =>
      Array.isArray(t.dims) || ArrayBuffer.isView(t.dims) ? t.dims.length === want.length && want.every((d, i) => t.dims[i] === d) : false;
    if (!p || p.type !== "float32" || !(p.data instanceof Float32Array) || !sameDims(p, [batch, n]) || p.data.length !== batch * n) {
      fail(`${file}: output ${pName} is not float32 [${batch}, ${n}] (batch, labels): got ${p?.type} ${dims(p)} ${faulty}`);
    }
    if (!k || k.type !== "int32" || !(k.data instanceof Int32Array) || !sameDims(k, [batch]) || k.data.length !== batch) {
      fail(`${file}: output ${kName} is not int32 [${batch}] (batch): got ${k?.type} ${dims(k)} ${faulty}`);
    }
    const a = typeof aName === "string" ? result[aName] : undefined;
    if (typeof aName === "string" && (!a || a.type !== "float32" || !sameDims(a, [batch, maxLen]))) {
      fail(`${file}: output ${aName} is not float32 [${batch}, ${maxLen}] (batch, max_len): got ${a?.type} ${dims(a)} ${faulty}`);
    }
    const probs = p.data, known = k.data;
    const indexOf = (j: number) => typeof indices === "number" ? indices + j : Array.isArray(indices) ? indices[j] : j;
    const what = indices === undefined ? "this input" : "this text";
    // rows in the order of their text index, so that the first fault found is the smallest index
    const check = [...Array(batch).keys()];
    if (Array.isArray(indices)) check.sort((a, b) => indexOf(a) - indexOf(b));
    for (const j of check) {
      const index = indexOf(j);
      const where = indices === undefined || indices === null || !named ? "" : `text ${index}: `;
      const faultAt = (message: string) => ({ probabilities: probs, known, fault: { index, message: `${where}${message} ${faulty}` } });
      for (let i = 0; i < n; i++) {
        const v = probs[j * n + i];
        if (!Number.isFinite(v)) return faultAt(`the model gave a NaN or infinite output for ${what} (${this.labels[i]}: ${v})`);
        if (v < 0 || v > 1) return faultAt(`the model gave a probability outside [0, 1] for ${what} (${this.labels[i]}: ${v})`);
      }
      const tokens = countFilled(rows[j]);
      if (known[j] < 0 || known[j] > tokens) {
        return faultAt(`the model's ${kName} output ${known[j]} is outside [0, ${tokens}] (the code points read)`);
      }
    }
    return { probabilities: probs, known, fault: null };
  }

  /**
   * Load-time check (as kdedge_run does): run an all-padding input and one of CJK code points through
   * the model and check its outputs (run()); a model that fails is refused before any text is classified.
   */
  async probe(): Promise<void> {
    const maxLen = this.manifest.input.max_len;
    const cjk = new Int32Array(maxLen);
    for (let i = 0; i < maxLen; i++) cjk[i] = 0x4e00 + (i % 0x5000);
    for (const [what, row] of [["an all-padding input", new Int32Array(maxLen)], ["an input of CJK code points", cjk]] as const) {
      try {
        await this.run([row]);
      } catch (e) {
        fail(`${this.model.file}: test inference on ${what} failed: ${(e as Error).message}`);
      }
    }
  }

  /**
   * One text's prediction from its rows' outputs (rows first .. first + windows - 1), pooled as docs/bundle.md
   * "Long texts (windows)" says: known and code points read summed over the windows; a window is judged as a text of its
   * own would be; a judged text takes, per label, the max over its judged windows, a text not judged the max
   * over all its windows. One window: exactly that row's outputs.
   */
  private decide(e: Encoded, probabilities: Float32Array, knownAll: Int32Array, filled: number[], first: number,
                 threshold: number | undefined, k: number | undefined): Prediction {
    const n = this.labels.length;
    const minCoverage = this.manifest.abstain.min_coverage;
    const windows = e.rows.length;
    let known = 0, read = 0;
    for (let w = first; w < first + windows; w++) {
      known += knownAll[w];
      read += filled[w];
    }
    const coverage = known / read;
    const judged = known > 0 && coverage >= minCoverage;
    let row = probabilities.subarray(first * n, (first + 1) * n); // finite, within [0, 1]: checked by run()
    if (windows > 1) {
      const pooled = new Float32Array(n).fill(-Infinity);
      for (let w = first; w < first + windows; w++) {
        const votes = !judged || (knownAll[w] > 0 && knownAll[w] / filled[w] >= minCoverage);
        if (!votes) continue;
        for (let i = 0; i < n; i++) pooled[i] = Math.max(pooled[i], probabilities[w * n + i]);
      }
      row = pooled;
    }
    const probs: Record<string, number> = Object.create(null); // no prototype: any label is an own key
    this.labels.forEach((lab, i) => { probs[lab] = row[i]; });
    let labels: string[] = [];
    if (judged) {
      const cut = this.manifest.thresholds;
      const order = [...row.keys()].filter((i) => row[i] >= (threshold ?? cut[i]));
      order.sort((a, b) => row[b] - row[a] || a - b); // most probable first; ties in label order
      labels = order.slice(0, k).map((i) => this.labels[i]);
    }
    return { labels, probabilities: probs, truncated: e.truncated, tokens: e.tokens, known, coverage, judged, windows };
  }

  /** Free the ONNX Runtime session. */
  async close(): Promise<void> {
    await this.session.release?.();
  }
}

export interface LoadOptions {
  /** Intra-op threads (Node; default 1). */
  threads?: number;
  /** Run the bundle's golden vectors through the loaded model and compare (default true); false skips the
   * check for a caller that has verified this bundle once already. */
  verifyGolden?: boolean;
}

interface GoldenVector {
  text: string;
  probabilities: number[];
  labels: string[];
  judged: boolean;
}

/** The golden vectors of `bytes` (the file `rel`), each checked field by field (errors name the line). */
export function readGolden(bytes: Uint8Array, rel: string, labels: readonly string[], expected: number): GoldenVector[] {
  let text: string;
  try {
    text = decodeUtf8(bytes);
  } catch {
    fail(`${rel}: not UTF-8`);
  }
  // line breaks as Python's str.splitlines (kdedge_run.golden reads the same file): no empty line after the last
  const lines = text.split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== expected) fail(`${rel}: ${lines.length} golden vectors, manifest golden.texts says ${expected}`);
  const known = new Set(labels);
  return lines.map((line, i) => {
    const bad = (problem: string): never => fail(`${rel} line ${i + 1}: ${problem}`);
    let row: unknown;
    try {
      row = parseJson(line).value;
    } catch (e) {
      bad(`not JSON (${(e as Error).message})`);
    }
    if (!isObject(row)) bad("must be a JSON object");
    const r = row as Record<string, unknown>;
    if (typeof r.text !== "string" || r.text === "") bad("'text' must be a non-empty string");
    if (!(Array.isArray(r.probabilities) && r.probabilities.length === labels.length &&
        r.probabilities.every((p) => isNumberIn(p, 0, 1)))) {
      bad(`'probabilities' must list ${labels.length} numbers within [0, 1], one per label`);
    }
    if (!(Array.isArray(r.labels) && r.labels.every((l) => typeof l === "string" && known.has(l)))) {
      bad("'labels' must list labels of the bundle");
    }
    if (r.judged !== undefined && typeof r.judged !== "boolean") bad("'judged' must be true or false");
    return { text: r.text as string, probabilities: r.probabilities as number[], labels: r.labels as string[],
             judged: (r.judged ?? true) as boolean };
  });
}

/** Run every golden text through `clf` and compare with its vector (docs/bundle.md "Golden vectors"): the
 * probabilities within the manifest's tolerance, the labels and `judged` equal. The vectors were made with the
 * manifest's first model; this reader runs the ONNX one, so the check runs when that is the first. */
export async function checkGolden(clf: Classifier, files: Map<string, Uint8Array>): Promise<void> {
  const golden = clf.manifest.golden;
  if (golden === undefined || golden === null || clf.manifest.models[0].format !== "onnx") return;
  const { file: rel, tolerance } = golden;
  const rows = readGolden(files.get(rel)!, rel, clf.labels, golden.texts);
  let got: Prediction[];
  try {
    got = await clf.predict(rows.map((r) => r.text));
  } catch (e) {
    if (e instanceof BundleError) throw e;
    fail(`${rel}: ${(e as Error).message} (a golden text the model must classify)`);
  }
  rows.forEach((row, i) => {
    const pred = got[i];
    clf.labels.forEach((label, j) => {
      const have = pred.probabilities[label], want = row.probabilities[j];
      if (Math.abs(have - want) > tolerance) {
        fail(`${rel} line ${i + 1}: the model gives ${label} ${have.toFixed(6)}, its golden vector ${want.toFixed(6)} ` +
          `(tolerance ${tolerance}): the model is not the one these vectors were made with, or this reader does not ` +
          `read the bundle as its writer did (bundle ${clf.source})`);
      }
    });
    if (pred.labels.length !== row.labels.length || pred.labels.some((l, k) => l !== row.labels[k]) || pred.judged !== row.judged) {
      fail(`${rel} line ${i + 1}: the model's labels ${JSON.stringify(pred.labels)} (judged ${pred.judged}) differ from ` +
        `its golden vector's ${JSON.stringify(row.labels)} (judged ${row.judged}) (bundle ${clf.source})`);
    }
  });
}

/** Shared loading: manifest → verified files → ONNX session → Classifier. */
export async function loadWith(readFile: ReadFile, ort: OrtLike, sessionOptions: object,
                               checkLayout?: (manifest: Manifest) => Promise<void>,
                               source = "(bundle)", verifyGolden = true): Promise<Classifier> {
  const raw = await readBounded(readFile, MANIFEST, MAX_MANIFEST_BYTES,
    (size) => `${MANIFEST}: ${size} bytes, more than the ${MAX_MANIFEST_BYTES} a manifest may have`,
    (e) => `${MANIFEST}: missing or unreadable: ${e.message}`);
  const manifest = parseManifest(raw);
  if (checkLayout) await checkLayout(manifest);
  const files = await verifyFiles(manifest, readFile);
  checkVocab(manifest, files);
  const entry = onnxEntry(manifest);
  let session: OrtSession;
  try {
    session = await ort.InferenceSession.create(files.get(entry.file)!, sessionOptions);
  } catch (e) {
    fail(`${entry.file}: ONNX Runtime cannot load the model: ${(e as Error).message}`);
  }
  let clf: Classifier;
  try {
    clf = new Classifier(manifest, session, ort, source);
    await clf.probe();
    if (verifyGolden) await checkGolden(clf, files);
  } catch (e) {
    await session.release?.().catch(() => undefined);
    throw e;
  }
  return clf;
}
