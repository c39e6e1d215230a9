// The console page: a ticket, a WebSocket of our own handed to noVNC, and a status line that
// always says what is happening or, when it fails, the error code and what to do next.
import RFB from "../vendor/novnc-1.7.0/core/rfb.js";
import KeyTable from "../vendor/novnc-1.7.0/core/input/keysym.js";
import keysyms from "../vendor/novnc-1.7.0/core/input/keysymdef.js";

const root = document.getElementById("console");
const vmUrl = root.dataset.vmUrl;
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const sentences = JSON.parse(document.getElementById("console-sentences").textContent);
const statusLine = document.getElementById("console-status");
const screen = document.getElementById("screen");
const ctrlAltDel = document.getElementById("ctrl-alt-del");
const pasteSend = document.getElementById("paste-send");
const reconnect = document.getElementById("reconnect");
const resume = document.getElementById("resume");
const scale = document.getElementById("scale");

// Each connect() is one attempt; events of an attempt that is no longer current are ignored.
let current = null;

function show(text, kind, code, detail) {
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

function setControls(on) {
  ctrlAltDel.disabled = !on;
  pasteSend.disabled = !on;
}

function stop() {
  const attempt = current;
  current = null;
  setControls(false);
  if (!attempt) return;
  clearTimeout(attempt.timer);
  if (attempt.rfb) {
    attempt.rfb.removeEventListener("disconnect", attempt.onDisconnect);
    attempt.rfb.disconnect();
  }
}

// Every code's sentence comes from the server's catalogue (limen/errors.py); the page only
// adds what it found out itself as the detail.
function fail(code, detail) {
  stop();
  show(sentences[code] || sentences.INTERNAL_ERROR, "error", code, detail);
  resume.hidden = code !== "VM_PAUSED";
}

async function vmStatus() {
  try {
    const r = await fetch(`${vmUrl}/status`, { headers: { Accept: "application/json" } });
    return r.ok ? await r.json() : null;
  } catch (e) {
    return null;
  }
}

function phaseOf(s) {
  return s && s.state === "running" ? "Waiting for the display…" : "Starting VM…";
}

// While the server starts the VM and opens its display, say which of the two is under way.
async function watchPhases(attempt) {
  const s = await vmStatus();
  if (current !== attempt || attempt.connected || attempt.close) return;
  if (s) show(phaseOf(s), "progress");
  attempt.timer = setTimeout(() => watchPhases(attempt), 500);
}

async function connect() {
  stop();
  const attempt = { rfb: null, close: null, connected: false, timer: null };
  current = attempt;
  reconnect.disabled = true;
  try {
    show("Asking for access…", "progress");
    let response, body;
    try {
      response = await fetch(`${vmUrl}/console/ticket`, {
        method: "POST", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      });
      body = await response.json();
    } catch (e) {
      return fail("LIMEN_UNREACHABLE");
    }
    if (current !== attempt) return;
    if (!response.ok) {
      const err = body.error || {};
      const code = err.code in sentences ? err.code : "HTTP_ERROR";
      return fail(code, err.message && err.message !== sentences[code] ? err.message : `HTTP status ${response.status}`);
    }
    show(phaseOf(await vmStatus()), "progress");
    if (current !== attempt) return;
    attempt.timer = setTimeout(() => watchPhases(attempt), 500);

    const ws = new WebSocket(body.ws_url);
    ws.binaryType = "arraybuffer";
    // Registered before noVNC attaches, so the code and reason are known when it reports.
    ws.addEventListener("close", (e) => { attempt.close = e; });
    const rfb = new RFB(screen, ws);
    attempt.rfb = rfb;
    rfb.scaleViewport = scale.checked;
    attempt.onDisconnect = (e) => onDisconnect(attempt, e);
    rfb.addEventListener("disconnect", attempt.onDisconnect);
    rfb.addEventListener("connect", () => {
      if (current !== attempt) return;
      attempt.connected = true;
      clearTimeout(attempt.timer);
      setControls(true);
      show("Connected", "ok");
      rfb.focus();
    });
    rfb.addEventListener("credentialsrequired", () => {
      fail("VNC_PASSWORD_REQUIRED");
    });
    rfb.addEventListener("securityfailure", (e) => {
      fail("VNC_SECURITY_FAILED", e.detail.reason || `status ${e.detail.status}`);
    });
  } finally {
    reconnect.disabled = false;
  }
}

async function onDisconnect(attempt, e) {
  if (current !== attempt) return;
  const wasConnected = attempt.connected;
  const code = attempt.close ? attempt.close.code : 0;
  // The reason is an error code, with a detail after ": " (CONSOLE_LIMIT: at most 16 per user).
  const [reason, ...said] = (attempt.close ? attempt.close.reason : "").split(": ");
  stop();
  if (code >= 4000 && reason) {
    let detail = said.length ? said.join(": ") : null;
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
    return fail(reason in sentences ? reason : "INTERNAL_ERROR", detail || (reason in sentences ? null : `close code ${code}`));
  }
  if (reason === "VNC_CLOSED" || reason === "LIMEN_STOPPING") return fail(reason);
  if (wasConnected && e.detail.clean) return show("Disconnected. Press Reconnect to open the console again.", "info");
  fail("CONNECTION_LOST", `WebSocket close code ${code || "none"}`);
}

// Typing pasted text: QEMU maps each key to the unshifted key of a US keyboard, so
// capitals and shifted symbols are sent with Shift held.
const SHIFTED = '~!@#$%^&*()_+{}|:"<>?';

function typeText(text) {
  const rfb = current && current.connected ? current.rfb : null;
  if (!rfb) return;
  for (const ch of text) {
    if (ch === "\n") {
      rfb.sendKey(KeyTable.XK_Return, "Enter");
      continue;
    }
    const shift = (ch >= "A" && ch <= "Z") || SHIFTED.includes(ch);
    if (shift) rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", true);
    rfb.sendKey(keysyms.lookup(ch.codePointAt(0)));
    if (shift) rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", false);
  }
  rfb.focus();
}

ctrlAltDel.addEventListener("click", () => {
  if (current && current.connected) {
    current.rfb.sendCtrlAltDel();
    current.rfb.focus();
  }
});
document.getElementById("fullscreen").addEventListener("click", () => root.requestFullscreen());
scale.addEventListener("change", () => { if (current && current.rfb) current.rfb.scaleViewport = scale.checked; });
document.getElementById("paste").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("paste-text");
  typeText(input.value);
  input.value = "";
});

// A paused VM's console offers Resume: ask for it, wait (with a deadline) until the VM runs,
// then connect.
async function resumeVm() {
  resume.disabled = true;
  try {
    show("Resuming…", "progress");
    const r = await fetch(`${vmUrl}/resume`, {
      method: "POST", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
    if (!r.ok) {
      const err = ((await r.json().catch(() => ({}))).error) || {};
      return fail(err.code in sentences ? err.code : "INTERNAL_ERROR", err.message || `HTTP status ${r.status}`);
    }
    const deadline = Date.now() + 30000;
    for (let s = await vmStatus(); !(s && s.state === "running"); s = await vmStatus()) {
      if (s && s.error) return fail(s.error.code in sentences ? s.error.code : "INTERNAL_ERROR", s.error.message);
      if (Date.now() > deadline) return fail("VM_NOT_RUNNING", "still not running 30 s after Resume");
      await new Promise((done) => setTimeout(done, 300));
    }
    resume.hidden = true;
    start();
  } finally {
    resume.disabled = false;
  }
}
resume.addEventListener("click", () => resumeVm().catch((e) => fail("CONSOLE_PAGE_ERROR", e.message)));

// Whatever goes wrong in the page itself is said too, never a silent blank screen.
function start() {
  connect().catch((e) => fail("CONSOLE_PAGE_ERROR", e.message));
}
reconnect.addEventListener("click", start);
start();
