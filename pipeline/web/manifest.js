// Manifest assembly (receiver) and paging (sender), as pipeline/protocol/manifest.py.
import { ProtocolError, controlSize, frame, MAX_CONTROL_FRAME } from "./frames.js";
import { validateManifestPaths } from "./paths.js";

const SIZE_LIMIT = 2 ** 53;
const badManifest = (m) => new ProtocolError("bad_manifest", m);

/** Collects manifest parts; add() returns the file list once the last part is in. */
export class ManifestAssembler {
  constructor({ maxChunkSize, maxFiles = 1_000_000 }) {
    this.maxChunkSize = maxChunkSize;
    this.maxFiles = maxFiles;
    this.nextPart = 0;
    this.entries = [];
    this.bytesSeen = 0;
    this.done = false;
  }

  add(part) {
    if (this.done) throw badManifest(`manifest part ${part.part} after the last part`);
    if (part.part !== this.nextPart) throw badManifest(`manifest part ${part.part} where part ${this.nextPart} was expected`);
    if (part.part === 0) {
      if (!(part.chunk_size >= 1 && part.chunk_size <= this.maxChunkSize)) {
        throw new ProtocolError("protocol", `chunk_size ${part.chunk_size} is outside 1..${this.maxChunkSize}`);
      }
      if (part.total_files > this.maxFiles) throw badManifest(`manifest lists ${part.total_files} files, at most ${this.maxFiles} allowed`);
      if (!(part.total_bytes >= 0 && part.total_bytes < SIZE_LIMIT)) throw badManifest(`total_bytes ${part.total_bytes} is out of range`);
      this.chunkSize = part.chunk_size;
      this.totalFiles = part.total_files;
      this.totalBytes = part.total_bytes;
    } else {
      if (part.chunk_size !== this.chunkSize) throw badManifest(`manifest part ${part.part} changes chunk_size`);
      if (("total_files" in part && part.total_files !== this.totalFiles)
        || ("total_bytes" in part && part.total_bytes !== this.totalBytes)) {
        throw badManifest(`manifest part ${part.part} changes the totals`);
      }
    }
    this.nextPart += 1;
    if (this.entries.length + part.files.length > this.totalFiles) {
      throw badManifest(`manifest holds more than the announced ${this.totalFiles} files`);
    }
    for (const entry of part.files) {
      if (entry.id !== this.entries.length) throw badManifest(`file id ${entry.id} where ${this.entries.length} was expected`);
      if (!(entry.size >= 0 && entry.size < SIZE_LIMIT)) throw badManifest(`file ${entry.id} size ${entry.size} is out of range`);
      this.bytesSeen += entry.size;
      this.entries.push({ id: entry.id, path: entry.path, size: entry.size });
    }
    if (!part.last) return null;
    this.done = true;
    if (this.entries.length !== this.totalFiles) {
      throw badManifest(`manifest holds ${this.entries.length} files, total_files says ${this.totalFiles}`);
    }
    if (this.bytesSeen !== this.totalBytes) {
      throw badManifest(`manifest sizes sum to ${this.bytesSeen}, total_bytes says ${this.totalBytes}`);
    }
    validateManifestPaths(this.entries.map((e) => e.path));
    return this.entries;
  }
}

/** Split a file list into manifest frames, each under 65536 bytes of JSON. */
export function buildManifestParts(files, chunkSize) {
  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  const parts = [];
  let current = [];
  const make = (list, last) => frame("manifest", {
    part: parts.length, last, chunk_size: chunkSize,
    total_files: parts.length === 0 ? files.length : undefined,
    total_bytes: parts.length === 0 ? totalBytes : undefined,
    files: list,
  });
  for (const f of files) {
    const entry = { id: f.id, path: f.path, size: f.size };
    if (current.length && controlSize(make([...current, entry], false)) > MAX_CONTROL_FRAME - 64) {
      parts.push(make(current, false));
      current = [];
    }
    current.push(entry);
  }
  parts.push(make(current, true));
  return parts;
}
