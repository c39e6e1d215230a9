// The serial console page: xterm.js over a WebSocket of our own. Binary messages are the
// line's bytes, both ways; LIMEN sends one text message, {"event": "open"}, once it holds the
// line. A serial line takes one client at a time: when another holds it, the page offers the
// choice to take it over or stay out. The terminal keeps its lines when the connection drops.
import { Terminal } from "../vendor/xterm-6.0.0/xterm.mjs";
import { FitAddon } from "../vendor/xterm-addon-fit-0.11.0/addon-fit.mjs";

import { Refusal, askTicket, reasonOf, refusalOf, show, showError, watchPhases } from "./console-page.js";

const root = document.getElementById("console");
const box = document.getElementById("terminal");
const copy = document.getElementById("copy");
const paste = document.getElementById("paste");
const size = document.getElementById("term-size");
const takeOver = document.getElementById("take-over");
const stayOut = document.getElementById("stay-out");
const reconnect = document.getElementById("reconnect");
const WAITING = "Opening the serial line…";

const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: "ui-monospace, monospace" });
const fit = new FitAddon();
term.loadAddon(fit);
term.onResize(({ cols, rows }) => {
  size.textContent = `${cols}×${rows}`;
  box.dataset.cols = cols;
  box.dataset.rows = rows;
});
term.open(box);
fit.fit();
new ResizeObserver(() => fit.fit()).observe(box);

// Each connect() is one attempt; events of an attempt that is no longer current are ignored.
let current = null;
const isCurrent = (attempt) => current === attempt;
const encoder = new TextEncoder();

function send(bytes) {
  if (current && current.connected) current.ws.send(bytes);
}
term.onData((text) => send(encoder.encode(text)));
term.onBinary((text) => send(Uint8Array.from(text, (ch) => ch.charCodeAt(0))));

function setControls(on) {
  paste.disabled = !on;
}

function offerChoice(on) {
  takeOver.hidden = stayOut.hidden = !on;
}

function stop() {
  const attempt = current;
  current = null;
  setControls(false);
  if (!attempt) return;
  clearTimeout(attempt.timer);
  if (attempt.ws) {
    attempt.ws.removeEventListener("close", attempt.onClose);
    attempt.ws.close();
  }
}

function fail(code, detail) {
  stop();
  showError(code, detail);
}

async function connect(force) {
  stop();
  offerChoice(false);
  const attempt = { ws: null, close: null, connected: false, timer: null };
  current = attempt;
  reconnect.disabled = true;
  try {
    show("Asking for access…", "progress");
    let body;
    try {
      body = await askTicket("serial");
    } catch (e) {
      if (e instanceof Refusal) return current === attempt && fail(e.code, e.detail);
      throw e;
    }
    if (current !== attempt) return;
    watchPhases(attempt, isCurrent, WAITING);
    const ws = new WebSocket(force ? `${body.ws_url}&take_over=1` : body.ws_url);
    ws.binaryType = "arraybuffer";
    attempt.ws = ws;
    ws.addEventListener("message", (e) => {
      if (current !== attempt) return;
      if (typeof e.data !== "string") return term.write(new Uint8Array(e.data));
      if (JSON.parse(e.data).event === "open") {
        attempt.connected = true;
        clearTimeout(attempt.timer);
        setControls(true);
        show("Connected. Press Enter for a prompt.", "ok");
        term.focus();
      }
    });
    attempt.onClose = (e) => onClose(attempt, e);
    ws.addEventListener("close", attempt.onClose);
  } finally {
    reconnect.disabled = false;
  }
}

async function onClose(attempt, e) {
  if (current !== attempt) return;
  attempt.close = e;
  const wasConnected = attempt.connected;
  const { code, reason, said } = reasonOf(e);
  stop();
  if (reason === "SERIAL_BUSY" || reason === "SERIAL_TAKEN_OVER") {
    showError(reason, said && (reason === "SERIAL_BUSY" ? `Held by ${said}.` : `Taken over by ${said}.`));
    return offerChoice(true);
  }
  const refusal = await refusalOf(e);
  if (current !== null) return;  // Reconnect was pressed meanwhile: that attempt is the page's now
  if (refusal) return fail(...refusal);
  if (reason === "VM_MIGRATED") {  // it runs on another host now: open it there
    show("The VM moved to another host. Reconnecting…", "progress");
    return connect();
  }
  if (reason === "SERIAL_CLOSED" || reason === "LIMEN_STOPPING") return fail(reason);
  if (wasConnected && e.wasClean) return show("Disconnected. Press Reconnect to open the serial console again.", "info");
  fail("CONNECTION_LOST", `WebSocket close code ${code || "none"}`);
}

// What the screen shows now, line by line, without the blank lines below the last one written.
function screenText() {
  const buffer = term.buffer.active;
  const lines = [];
  for (let y = buffer.viewportY; y < buffer.viewportY + term.rows; y++) {
    const line = buffer.getLine(y);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\n").replace(/\s+$/, "");
}

copy.addEventListener("click", async () => {
  const text = term.hasSelection() ? term.getSelection() : screenText();
  try {
    await navigator.clipboard.writeText(text);
    show(term.hasSelection() ? "Copied the selection." : "Copied the screen.", current && current.connected ? "ok" : "info");
  } catch (e) {
    showError("CONSOLE_PAGE_ERROR", `The browser did not allow copying: ${e.message}`);
  }
  term.focus();
});
paste.addEventListener("click", async () => {
  try {
    term.paste(await navigator.clipboard.readText());  // typed into the line as if pasted
  } catch (e) {
    showError("CONSOLE_PAGE_ERROR", `The browser did not allow reading the clipboard: ${e.message}`);
  }
  term.focus();
});
takeOver.addEventListener("click", () => start(true));
stayOut.addEventListener("click", () => {
  offerChoice(false);
  show("You stayed out: the serial line stays with whoever holds it. Press Reconnect to ask again.", "info");
});
document.getElementById("fullscreen").addEventListener("click", () => root.requestFullscreen());

// Whatever goes wrong in the page itself is said too, never a silent blank terminal.
function start(force) {
  connect(force).catch((e) => fail("CONSOLE_PAGE_ERROR", e.message));
}
reconnect.addEventListener("click", () => start(false));
start(false);
