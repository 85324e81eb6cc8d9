// Manifest path rules of Appendix B.4 (the same checks as pipeline/protocol/paths.py).
// Any failure throws ProtocolError "bad_path"; the receiver refuses the whole
// manifest before the trust gate opens, so nothing is written.
import { ProtocolError } from "./frames.js";

export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;
// NUL, control characters (Unicode Cc: U+0000-U+001F, U+007F-U+009F) and backslash.
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\\]/;
const DRIVE_LETTER = /^[A-Za-z]:/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const utf8 = new TextEncoder();

const show = (path) => JSON.stringify(path.length <= 60 ? path : `${path.slice(0, 60)}...`);
const bad = (path, rule) => new ProtocolError("bad_path", `path ${show(path)} ${rule}`);

export function validatePath(path) {
  if (typeof path !== "string" || path.length === 0) throw bad(String(path), "is empty");
  if (LONE_SURROGATE.test(path)) throw bad(path, "is not valid Unicode (lone surrogate)");
  const bytes = utf8.encode(path).length;
  if (bytes > MAX_PATH_BYTES) throw bad(path, `is ${bytes} UTF-8 bytes, more than ${MAX_PATH_BYTES}`);
  if (path.startsWith("/")) throw bad(path, "is absolute (starts with '/')");
  if (DRIVE_LETTER.test(path)) throw bad(path, "starts with a drive letter");
  const forbidden = FORBIDDEN.exec(path);
  if (forbidden) throw bad(path, `contains ${JSON.stringify(forbidden[0])} (NUL, backslash or control character)`);
  if (path.normalize("NFC") !== path) throw bad(path, "is not in Unicode NFC");
  for (const component of path.split("/")) {
    if (component === "") throw bad(path, "has an empty component");
    if (component === "." || component === "..") throw bad(path, `has a '${component}' component`);
    const n = utf8.encode(component).length;
    if (n > MAX_COMPONENT_BYTES) throw bad(path, `has a component of ${n} UTF-8 bytes, more than ${MAX_COMPONENT_BYTES}`);
  }
}

/** Each path, then duplicates and file-versus-directory-prefix clashes. */
export function validateManifestPaths(paths) {
  const files = new Set();
  const dirs = new Set();
  for (const path of paths) {
    validatePath(path);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (files.has(prefix)) throw bad(path, `lies under ${show(prefix)}, which is also a file`);
      dirs.add(prefix);
    }
    if (files.has(path)) throw bad(path, "appears twice");
    if (dirs.has(path)) throw bad(path, "is a file and also a directory prefix of another path");
    files.add(path);
  }
}
