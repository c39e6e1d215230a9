// What the two console pages (the screen and the serial line) share: the status line and the
// sentences of the error codes, the VM's status while it starts, the ticket, and how a
// WebSocket's close is read into a code and a detail.
const root = document.getElementById("console");
export const vmUrl = root.dataset.vmUrl;
export const csrf = document.querySelector('meta[name="csrf-token"]').content;
export const sentences = JSON.parse(document.getElementById("console-sentences").textContent);
const statusLine = document.getElementById("console-status");

export function show(text, kind, code, detail) {
  statusLine.replaceChildren();
  if (code) {
    const strong = document.createElement("strong");
    strong.textContent = code;
    statusLine.append(strong, " ");
  }
  statusLine.append(text);
  if (detail) {
    const more = document.createElement("span");
    more.className = "detail";
    more.textContent = detail;
    statusLine.append(more);
  }
  statusLine.dataset.kind = kind;
  statusLine.dataset.code = code || "";
}

// Every code's sentence comes from the server's catalogue (limen/errors.py); the page only
// adds what it found out itself as the detail.
export function showError(code, detail) {
  show(sentences[code] || sentences.INTERNAL_ERROR, "error", code, detail);
}

export async function vmStatus() {
  try {
    const r = await fetch(`${vmUrl}/status`, { headers: { Accept: "application/json" } });
    return r.ok ? await r.json() : null;
  } catch (e) {
    return null;
  }
}

export function phaseOf(s, waiting) {
  return s && s.state === "running" ? waiting : "Starting VM…";
}

// While the server starts the VM and opens its side, say which of the two is under way, until
// the attempt connects, closes or is no longer the page's.
export function watchPhases(attempt, isCurrent, waiting) {
  const tick = async () => {
    const s = await vmStatus();
    if (!isCurrent(attempt) || attempt.connected || attempt.close) return;
    if (s) show(phaseOf(s, waiting), "progress");
    attempt.timer = setTimeout(tick, 500);
  };
  tick();
}

// A ticket refused, or LIMEN not reached: the code and the detail to show.
export class Refusal extends Error {
  constructor(code, detail) {
    super(code);
    this.code = code;
    this.detail = detail;
  }
}

// A ticket for the VM's console of `kind` ("screen" or "serial"): {ticket, ws_url, expires_at}.
export async function askTicket(kind) {
  let response, body;
  try {
    response = await fetch(`${vmUrl}/console/ticket?kind=${kind}`, {
      method: "POST", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
    body = await response.json();
  } catch (e) {
    throw new Refusal("LIMEN_UNREACHABLE");
  }
  if (!response.ok) {
    const err = body.error || {};
    const code = err.code in sentences ? err.code : "HTTP_ERROR";
    throw new Refusal(code, err.message && err.message !== sentences[code] ? err.message : `HTTP status ${response.status}`);
  }
  return body;
}

// The close's reason is an error code, with a detail after ": " (CONSOLE_LIMIT: at most 16 per user).
export function reasonOf(close) {
  const [reason, ...said] = (close ? close.reason : "").split(": ");
  return { code: close ? close.code : 0, reason, said: said.length ? said.join(": ") : null };
}

// A refusal or an end that LIMEN named with a 4xxx code: [code, detail] to show, with what the
// page can find out (libvirt's words for a failed start, why a VM is paused); null otherwise.
export async function refusalOf(close) {
  const { code, reason, said } = reasonOf(close);
  if (code < 4000 || !reason) return null;
  let detail = said;
  if (reason === "VM_PAUSED") {
    const s = await vmStatus();
    detail = s && s.state === "paused" ? `paused: ${s.reason || "reason unknown"}` : null;
  } else if (reason === "VM_START_FAILED" || reason === "VM_NOT_RUNNING") {
    const s = await vmStatus();  // the Operation's error carries libvirt's own words
    if (s && s.error && s.error.message) detail = s.error.message;
    else if (s) detail = `LIMEN sees the VM as ${s.state}${s.reason ? ` (${s.reason})` : ""}.`;
  }
  if (code === 4403 && reason !== "NOT_ALLOWED" && reason !== "ACCOUNT_DISABLED") {
    detail = "Your access to this console was revoked.";  // the reason says how
  }
  return [reason in sentences ? reason : "INTERNAL_ERROR", detail || (reason in sentences ? null : `close code ${code}`)];
}
