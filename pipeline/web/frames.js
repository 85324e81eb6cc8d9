// Wire codec for Appendix B: DATA frames (B.2) and control frames (B.3).
// The same rules as pipeline/protocol/frames.py; every failure throws a
// ProtocolError carrying the code the appendix names ("protocol" / "version").

export const PROTOCOL_VERSION = 1;
export const MAX_CONTROL_FRAME = 65536;
export const DEFAULT_MAX_MESSAGE_SIZE = 65536; // RFC 8841: a side that advertises none
export const MAX_SACK_RANGES = 64;
export const HEADER_LEN = 24;
const KIND_DATA = 0x01;
const FLAG_LAST = 0x01;
const SEQ_END_LIMIT = 2 ** 64;
const SIZE_LIMIT = 2 ** 53;

export class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const fail = (message) => { throw new ProtocolError("protocol", message); };

// -- DATA frames -----------------------------------------------------------

/** Parse a DATA frame (ArrayBuffer or Uint8Array); payload is a view, not a copy. */
export function decodeData(message) {
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
  if (bytes.length < HEADER_LEN) fail(`DATA frame of ${bytes.length} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = view.getUint8(0);
  const flags = view.getUint8(1);
  const headerLen = view.getUint16(2);
  if (kind !== KIND_DATA) fail(`unknown binary frame kind 0x${kind.toString(16).padStart(2, "0")}`);
  if (flags & ~FLAG_LAST) fail(`reserved DATA flag bits set (0x${flags.toString(16)})`);
  if (headerLen < HEADER_LEN) fail(`DATA header_len ${headerLen} is below 24`);
  if (headerLen > bytes.length) fail(`DATA header_len ${headerLen} exceeds the message`);
  const length = view.getUint32(20);
  if (length === 0) fail("DATA frame with an empty payload");
  if (length !== bytes.length - headerLen) fail(`DATA length field ${length} != payload bytes ${bytes.length - headerLen}`);
  return {
    fileId: view.getUint32(4),
    chunkIndex: view.getUint32(8),
    seq: Number(view.getBigUint64(12)),
    last: Boolean(flags & FLAG_LAST),
    payload: bytes.subarray(headerLen),
  };
}

/** Write a version-1 header into the first 24 bytes of `frame` (payload follows). */
export function packHeader(frame, fileId, chunkIndex, seq, last, length) {
  const view = new DataView(frame.buffer, frame.byteOffset, HEADER_LEN);
  view.setUint8(0, KIND_DATA);
  view.setUint8(1, last ? FLAG_LAST : 0);
  view.setUint16(2, HEADER_LEN);
  view.setUint32(4, fileId);
  view.setUint32(8, chunkIndex);
  view.setBigUint64(12, BigInt(seq));
  view.setUint32(20, length);
}

export function encodeData(fileId, chunkIndex, seq, last, payload) {
  const frame = new Uint8Array(HEADER_LEN + payload.length);
  packHeader(frame, fileId, chunkIndex, seq, last, payload.length);
  frame.set(payload, HEADER_LEN);
  return frame;
}

// -- control frames --------------------------------------------------------

const isInt = (v) => Number.isInteger(v);
const checks = {
  int: (v) => isInt(v),
  u32: (v) => isInt(v) && v >= 0 && v <= 0xffffffff,
  u64: (v) => isInt(v) && v >= 0 && v <= SEQ_END_LIMIT,
  i64: (v) => isInt(v) && Math.abs(v) <= 2 ** 63,
  count: (v) => isInt(v) && v >= 0 && v < SIZE_LIMIT,
  positive: (v) => isInt(v) && v >= 1 && v < SIZE_LIMIT,
  str: (v) => typeof v === "string",
  bool: (v) => typeof v === "boolean",
  role: (v) => v === "sender" || v === "receiver",
  verdict: (v) => v === "verified" || v === "mismatch" || v === "io_error",
  sha: (v) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v),
  shaOrNull: (v) => v === null || checks.sha(v),
  strList: (v) => Array.isArray(v) && v.every((s) => typeof s === "string"),
  sack: (v) => Array.isArray(v) && v.every((r) => Array.isArray(r) && r.length === 2 && r.every(checks.u64)),
  files: (v) => Array.isArray(v) && v.every(checkEntry),
};

// Field order is the order the vectors use, so frames we build re-encode alike.
// [name, check, required]
const SCHEMAS = {
  hello: [["v", "int", 1], ["role", "role", 1], ["session", "str", 1], ["max_message_size", "positive", 1],
    ["agent", "str", 0], ["features", "strList", 0], ["resume", "bool", 0]],
  manifest: [["part", "count", 1], ["last", "bool", 1], ["chunk_size", "positive", 1],
    ["total_files", "count", 0], ["total_bytes", "int", 0], ["files", "files", 1]],
  accept: [["window", "positive", 0]],
  reject: [["code", "str", 1], ["message", "str", 1]],
  ack: [["cum", "u64", 1], ["sack", "sack", 0]],
  file_end: [["id", "u32", 1], ["size", "count", 1], ["chunks", "count", 1], ["sha256", "sha", 1]],
  file_result: [["id", "u32", 1], ["status", "verdict", 1], ["sha256", "shaOrNull", 1]],
  done: [["files", "count", 1], ["bytes", "count", 1]],
  done_ack: [["verified", "count", 1], ["failed", "count", 1]],
  resume: [["cum", "u64", 1], ["sack", "sack", 0]],
  cancel: [["code", "str", 1], ["message", "str", 1]],
  error: [["code", "str", 1], ["message", "str", 1]],
};

const ENTRY = [["id", "u32", 1], ["path", "str", 1], ["size", "int", 1],
  ["mtime_ns", "i64", 0], ["mode", "u32", 0], ["sha256", "sha", 0]];

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function checkFields(obj, schema, what) {
  for (const [name, check, required] of schema) {
    if (!(name in obj) || (obj[name] === null && check !== "shaOrNull")) {
      if (required) fail(`${what} lacks required field ${name}`);
      continue;
    }
    if (!checks[check](obj[name])) fail(`${what} field ${name} has the wrong type or range`);
  }
  return true;
}

function checkEntry(entry) {
  if (!isObject(entry)) fail("manifest file entry is not an object");
  return checkFields(entry, ENTRY, "manifest file entry");
}

function checkSack(sack, cum) {
  if (sack === undefined || sack === null) return;
  if (sack.length > MAX_SACK_RANGES) fail(`sack has ${sack.length} ranges, at most 64 allowed`);
  let previousEnd = cum;
  for (const [first, end] of sack) {
    if (!(first < end)) fail(`sack range [${first}, ${end}) is empty`);
    // Ranges may start at cum (docs/protocol.md "SACK ranges may start at cum").
    if (first < previousEnd) fail("sack ranges must be ascending, disjoint and beyond cum");
    previousEnd = end;
  }
}

const utf8 = new TextEncoder();

/** Decode one control frame (a DataChannel text message) into a plain object. */
export function decodeControl(text) {
  if (typeof text !== "string") fail("control frame is not text");
  if (utf8.encode(text).length > MAX_CONTROL_FRAME) fail("control frame exceeds 65536 bytes");
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    fail("control frame is not JSON");
  }
  if (!isObject(obj)) fail("control frame is not a JSON object");
  if (typeof obj.t !== "string") fail("control frame lacks a string field t");
  const schema = SCHEMAS[obj.t];
  if (!schema) fail(`unknown control frame type ${JSON.stringify(obj.t).slice(0, 40)}`);
  checkFields(obj, schema, obj.t);
  if (obj.t === "hello" && obj.v !== PROTOCOL_VERSION) {
    throw new ProtocolError("version", `protocol version ${obj.v} is not supported (we speak 1)`);
  }
  if (obj.t === "ack" || obj.t === "resume") checkSack(obj.sack, obj.cum);
  if (obj.t === "file_result" && obj.sha256 === null && obj.status !== "io_error") {
    fail(`file_result ${obj.status} without sha256 (null only on io_error)`);
  }
  if (obj.t === "manifest" && obj.part === 0 && (!("total_files" in obj) || !("total_bytes" in obj))) {
    fail("manifest part 0 lacks total_files or total_bytes");
  }
  return obj;
}

/** Compact JSON text of a frame. Objects keep their key order, so a decoded
 * frame (unknown fields included) re-encodes byte-for-byte (B.7). */
export function encodeControl(frame) {
  return JSON.stringify(frame);
}

/** Build a frame with fields in schema order, leaving out undefined optionals. */
export function frame(t, fields = {}) {
  const out = { t };
  for (const [name] of SCHEMAS[t]) if (fields[name] !== undefined) out[name] = fields[name];
  return out;
}

export function controlSize(obj) {
  return utf8.encode(JSON.stringify(obj)).length;
}
