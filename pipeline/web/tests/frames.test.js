// Appendix B vectors: decode and re-encode every valid one byte-for-byte, reject
// every invalid one with the listed code; B.4 path rules; manifest rules.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { decodeData, encodeData, decodeControl, encodeControl, ProtocolError } from "../frames.js";
import { validateManifestPaths } from "../paths.js";
import { ManifestAssembler, buildManifestParts } from "../manifest.js";

// A copy of the contract's ../shared/spec/appendix-b-vectors.json; refresh it when the spec changes.
const here = fileURLToPath(new URL(".", import.meta.url));
const vectors = JSON.parse(readFileSync(`${here}appendix-b-vectors.json`, "utf8"));
const hex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (u) => Buffer.from(u).toString("hex");
const code = (fn) => { try { fn(); } catch (e) { assert.ok(e instanceof ProtocolError, String(e)); return e.code; } return null; };

test("valid DATA vectors decode and re-encode byte-for-byte", () => {
  assert.ok(vectors.data_frames_valid.length >= 4);
  for (const v of vectors.data_frames_valid) {
    const f = decodeData(hex(v.hex));
    assert.deepEqual([f.fileId, f.chunkIndex, f.seq, f.last, toHex(f.payload)],
      [v.file_id, v.chunk_index, v.seq, v.last, v.payload_hex], v.name);
    const again = toHex(encodeData(f.fileId, f.chunkIndex, f.seq, f.last, f.payload));
    if (v.reencode_differs) assert.notEqual(again, v.hex, v.name);
    else assert.equal(again, v.hex, v.name);
  }
});

test("invalid DATA vectors are rejected with their code", () => {
  for (const v of vectors.data_frames_invalid) assert.equal(code(() => decodeData(hex(v.hex))), v.code, v.name);
});

test("valid control vectors decode and re-encode byte-for-byte", () => {
  for (const text of vectors.control_frames_valid) assert.equal(encodeControl(decodeControl(text)), text);
});

test("invalid control vectors are rejected with their code", () => {
  for (const v of vectors.control_frames_invalid) assert.equal(code(() => decodeControl(v.text)), v.code, v.name);
});

test("sack rules: ascending, disjoint, at most 64 ranges", () => {
  assert.equal(code(() => decodeControl('{"t":"ack","cum":10,"sack":[[15,20],[12,14]]}')), "protocol");
  assert.equal(code(() => decodeControl('{"t":"ack","cum":10,"sack":[[12,12]]}')), "protocol");
  assert.equal(code(() => decodeControl('{"t":"ack","cum":10,"sack":[[10,12]]}')), null);
  const many = JSON.stringify({ t: "ack", cum: 0, sack: Array.from({ length: 65 }, (_, i) => [2 * i + 1, 2 * i + 2]) });
  assert.equal(code(() => decodeControl(many)), "protocol");
  assert.equal(code(() => decodeControl('{"t":"file_result","id":0,"status":"verified","sha256":null}')), "protocol");
});

test("hostile manifest paths are rejected with bad_path, good ones pass", () => {
  for (const v of vectors.manifest_paths_rejected) assert.equal(code(() => validateManifestPaths(v.paths)), v.code, JSON.stringify(v.paths).slice(0, 40));
  assert.equal(code(() => validateManifestPaths(vectors.manifest_paths_accepted)), null);
  assert.equal(code(() => validateManifestPaths(["cafe\u0301.txt"])), "bad_path"); // not NFC
  assert.equal(code(() => validateManifestPaths(["a/b/c", "a/b"])), "bad_path");
  assert.equal(code(() => validateManifestPaths(["A", "a"])), null); // case is significant
});

test("manifest assembly: parts in order, totals match, ids in order", () => {
  const files = Array.from({ length: 3000 }, (_, i) => ({ id: i, path: `dir/file-${i}-${"x".repeat(20)}.bin`, size: i }));
  const parts = buildManifestParts(files, 65536);
  assert.ok(parts.length > 1, "a large manifest is paged");
  for (const p of parts) assert.ok(encodeControl(p).length <= 65536);
  const asm = new ManifestAssembler({ maxChunkSize: 65536 });
  let out = null;
  for (const p of parts) out = asm.add(decodeControl(encodeControl(p)));
  assert.equal(out.length, 3000);
  const bad = (mutate) => { const a = new ManifestAssembler({ maxChunkSize: 65536 }); const p = structuredClone(parts[0]); p.last = true; p.total_files = p.files.length; p.total_bytes = p.files.reduce((n, f) => n + f.size, 0); mutate(p); return code(() => a.add(p)); };
  assert.equal(bad(() => {}), null);
  assert.equal(bad((p) => { p.total_bytes += 1; }), "bad_manifest");
  assert.equal(bad((p) => { p.files[1].id = 5; }), "bad_manifest");
  assert.equal(bad((p) => { p.files[0].size = -1; p.total_bytes -= 1; }), "bad_manifest");
  assert.equal(bad((p) => { p.files[0].path = "../x"; }), "bad_path");
  assert.equal(bad((p) => { p.chunk_size = 70000; }), "protocol");
  const a = new ManifestAssembler({ maxChunkSize: 65536 });
  assert.equal(code(() => a.add({ ...parts[1] })), "bad_manifest"); // part 1 without part 0
});
