// The page's shared status object (window.xfer, BROWSER-CONTRACT.md) and its
// rendering: progress, the per-file table, the outcome in words, details.
import { diagnostics } from "./rtc.js";
import { diagnoseNoRoute, noRouteText } from "./noroute.js";

export const $ = (id) => document.getElementById(id);
export const params = new URLSearchParams(location.search);
let resolveFinished;
export const xfer = window.xfer = {
  role: "receiver", state: "idle", code: null, outcome: null, error_code: null, message: null,
  files: [], bytes: 0,
  connection: { candidate_types_local: [], candidate_types_remote: [], selected_pair: null, rtt_ms: null, max_message_size: 65536 },
  finished: new Promise((r) => { resolveFinished = r; }),
};
export const ICE_DEADLINE_MS = Number(params.get("ice_timeout") || 20) * 1000;
export const ui = { pc: null, totalBytes: 0, startedAt: 0, onFinish: () => {}, close: () => {} };

export const human = (n) => n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 2 ** 30 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 2 ** 30).toFixed(2)} GiB`;

export function render() {
  const done = xfer.files.filter((f) => f.status === "verified").length;
  const secs = (performance.now() - ui.startedAt) / 1000;
  const rate = ui.startedAt && secs > 0 ? xfer.bytes / secs : 0;
  const eta = rate > 0 ? Math.round((ui.totalBytes - xfer.bytes) / rate) : null;
  $("progress").textContent = xfer.files.length
    ? `${human(xfer.bytes)} of ${human(ui.totalBytes)} · ${human(rate)}/s · ETA ${eta ?? "?"} s · files done ${done}/${xfer.files.length}` : "";
  const body = $("files-table").tBodies[0];
  xfer.files.forEach((f, i) => {
    let tr = body.rows[i];
    if (!tr) {
      tr = body.insertRow();
      for (const t of [f.path, human(f.size), ""]) tr.insertCell().textContent = t;
    }
    if (tr.dataset.status !== f.status) {
      tr.dataset.status = f.status;
      tr.cells[2].firstChild ? (tr.cells[2].firstChild.textContent = f.status) : (tr.cells[2].textContent = f.status);
    }
  });
}

export async function refreshDetails() {
  Object.assign(xfer.connection, await diagnostics(ui.pc).catch(() => ({})));
  $("details-text").textContent = `state: ${xfer.state}\nICE: ${ui.pc?.iceConnectionState ?? "-"}\n${JSON.stringify(xfer.connection, null, 1)}`
    + (xfer.connection.no_route ? `\n\n${noRouteText(xfer.connection.no_route)}` : "");
}

const WORDS = { completed: "Completed", failed: "Failed", rejected: "Rejected", cancelled: "Cancelled", no_route: "No route" };

/** End no_route (A.1) with this page's case-by-case diagnosis, kept in xfer.connection.no_route. */
export async function finishNoRoute() {
  if (xfer.outcome) return;
  const diagnosis = await diagnoseNoRoute(ui.pc, Boolean(params.get("stun")));
  if (xfer.outcome) return;
  xfer.connection.no_route = diagnosis;
  finish("no_route", "no_route", `${diagnosis.summary} ${diagnosis.likely}`);
}

/** Reach the one terminal outcome (Appendix A rule 1); later calls change nothing. */
export function finish(outcome, code, message) {
  if (xfer.outcome) return;
  Object.assign(xfer, { outcome, error_code: code ?? null, message, state: "done" });
  $("outcome").textContent = `${WORDS[outcome]}${code && outcome !== "completed" ? ` (${code})` : ""}: ${message}`;
  $("cancel").classList.add("hidden");
  $("offer-box").classList.add("hidden");
  ui.onFinish();
  refreshDetails().finally(() => {
    render();
    resolveFinished(JSON.parse(JSON.stringify({ ...xfer, finished: undefined })));
    // Keep the channel a moment so our last frames (done_ack, cancel, error) get out.
    // A sender that completed has none left: done_ack was the peer's last frame (B.2),
    // and a receiving CLI waits for the sender's close before it reports.
    const linger = outcome !== "completed" ? 1000 : xfer.role === "sender" ? 0 : 5000;
    setTimeout(() => ui.close(), linger);
  });
}

setInterval(() => { if (xfer.state === "transferring") render(); }, 250);
setInterval(refreshDetails, 2000);
