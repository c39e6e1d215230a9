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
const scale = document.getElementById("scale");

let rfb = null;
let lastClose = null;
let connected = false;
let phaseTimer = null;

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

function fail(code, text, detail) {
  clearTimeout(phaseTimer);
  setControls(false);
  show(text, "error", code, detail);
}

function setControls(on) {
  ctrlAltDel.disabled = !on;
  pasteSend.disabled = !on;
}

async function vmStatus() {
  try {
    const r = await fetch(`${vmUrl}/status`, { headers: { Accept: "application/json" } });
    return r.ok ? await r.json() : null;
  } catch (e) {
    return null;
  }
}

// While the server starts the VM and opens its display, say which of the two is under way.
async function watchPhases() {
  const s = await vmStatus();
  if (connected || lastClose) return;
  if (s) show(s.state === "running" ? "Waiting for the display…" : "Starting VM…", "progress");
  phaseTimer = setTimeout(watchPhases, 500);
}

function disconnect() {
  clearTimeout(phaseTimer);
  if (rfb) {
    rfb.removeEventListener("disconnect", onDisconnect);
    rfb.disconnect();
    rfb = null;
  }
  connected = false;
  setControls(false);
}

async function connect() {
  disconnect();
  lastClose = null;
  show("Asking for access…", "progress");
  let response, body;
  try {
    response = await fetch(`${vmUrl}/console/ticket`, {
      method: "POST", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
    body = await response.json();
  } catch (e) {
    return fail("LIMEN_UNREACHABLE", "LIMEN did not answer. Check your connection, then press Reconnect.");
  }
  if (!response.ok) {
    const err = body.error || {};
    return fail(err.code || `HTTP_${response.status}`, sentences[err.code] || err.message || "LIMEN refused the console.");
  }
  const s = await vmStatus();
  show(s && s.state === "running" ? "Waiting for the display…" : "Starting VM…", "progress");
  phaseTimer = setTimeout(watchPhases, 500);

  const ws = new WebSocket(body.ws_url);
  ws.binaryType = "arraybuffer";
  // Registered before noVNC attaches, so the code and reason are known when it reports.
  ws.addEventListener("close", (e) => { lastClose = e; });
  rfb = new RFB(screen, ws);
  rfb.scaleViewport = scale.checked;
  rfb.addEventListener("connect", () => {
    connected = true;
    clearTimeout(phaseTimer);
    setControls(true);
    show("Connected", "ok");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", onDisconnect);
  rfb.addEventListener("credentialsrequired", () => {
    disconnect();
    fail("VNC_PASSWORD_REQUIRED", "The VM's display asks for a password, which LIMEN does not manage. Remove the VNC password from the VM's definition.");
  });
  rfb.addEventListener("securityfailure", (e) => {
    fail("VNC_SECURITY_FAILED", `The VM's display refused the connection: ${e.detail.reason || "status " + e.detail.status}.`);
  });
}

async function onDisconnect(e) {
  const wasConnected = connected;
  disconnect();
  const code = lastClose ? lastClose.code : 0;
  const reason = lastClose ? lastClose.reason : "";
  if (code >= 4000 && reason) {
    let detail = null;
    if (reason === "VM_START_FAILED" || reason === "VM_NOT_RUNNING") {
      const s = await vmStatus();  // the Operation's error carries libvirt's own words
      if (s && s.error && s.error.message) detail = s.error.message;
    }
    return fail(reason, sentences[reason] || `The console was refused (code ${code}).`, detail);
  }
  if (reason === "VNC_CLOSED") {
    return fail("VNC_CLOSED", "The VM's display closed: the VM was shut down or stopped. Press Reconnect to start it again.");
  }
  if (wasConnected && e.detail.clean) return show("Disconnected. Press Reconnect to open the console again.", "info");
  fail("CONNECTION_LOST", `The connection to the console was lost (WebSocket close code ${code || "none"}). Check the network, then press Reconnect.`);
}

ctrlAltDel.addEventListener("click", () => { if (rfb) { rfb.sendCtrlAltDel(); rfb.focus(); } });
document.getElementById("fullscreen").addEventListener("click", () => root.requestFullscreen());
scale.addEventListener("change", () => { if (rfb) rfb.scaleViewport = scale.checked; });
document.getElementById("paste").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("paste-text");
  if (!rfb) return;
  for (const ch of input.value) {
    if (ch === "\n") rfb.sendKey(KeyTable.XK_Return, "Enter");
    else rfb.sendKey(keysyms.lookup(ch.codePointAt(0)));
  }
  input.value = "";
  rfb.focus();
});

// Whatever goes wrong in the page itself is said too, never a silent blank screen.
function start() {
  connect().catch((e) => fail("CONSOLE_PAGE_ERROR", `The console page failed: ${e.message}. Reload the page.`));
}
document.getElementById("reconnect").addEventListener("click", start);
start();
