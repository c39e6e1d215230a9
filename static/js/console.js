// The console page: a ticket, a WebSocket of our own handed to noVNC, and a status line that
// always says what is happening or, when it fails, the error code and what to do next.
import RFB from "../vendor/novnc-1.7.0/core/rfb.js";
import KeyTable from "../vendor/novnc-1.7.0/core/input/keysym.js";
import keysyms from "../vendor/novnc-1.7.0/core/input/keysymdef.js";

import {
  Refusal, askTicket, csrf, reasonOf, refusalOf, sentences, show, showError, vmStatus, vmUrl, watchPhases,
} from "./console-page.js";

const root = document.getElementById("console");
const screen = document.getElementById("screen");
const ctrlAltDel = document.getElementById("ctrl-alt-del");
const pasteSend = document.getElementById("paste-send");
const reconnect = document.getElementById("reconnect");
const resume = document.getElementById("resume");
const scale = document.getElementById("scale");
const WAITING = "Waiting for the display…";

// Each connect() is one attempt; events of an attempt that is no longer current are ignored.
let current = null;
const isCurrent = (attempt) => current === attempt;

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

function fail(code, detail) {
  stop();
  showError(code, detail);
  resume.hidden = code !== "VM_PAUSED";
}

async function connect() {
  stop();
  const attempt = { rfb: null, close: null, connected: false, timer: null };
  current = attempt;
  reconnect.disabled = true;
  try {
    show("Asking for access…", "progress");
    let body;
    try {
      body = await askTicket("screen");
    } catch (e) {
      if (e instanceof Refusal) return current === attempt && fail(e.code, e.detail);
      throw e;
    }
    if (current !== attempt) return;
    watchPhases(attempt, isCurrent, WAITING);

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
  const { code, reason } = reasonOf(attempt.close);
  stop();
  const refusal = await refusalOf(attempt.close);
  if (refusal) return fail(...refusal);
  if (reason === "VM_MIGRATED") {  // it runs on another host now: open it there
    show("The VM moved to another host. Reconnecting…", "progress");
    return connect();
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
