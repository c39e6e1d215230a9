// LIMEN's page behaviour. No inline scripts: everything lives here.
(function () {
  "use strict";

  // Poll only while the tab is visible; ask at once when it becomes visible again.
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (document.hidden && e.detail.elt.hasAttribute("data-poll")) e.preventDefault();
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) htmx.trigger(document.body, "limen:poll");
  });

  // Ask before a button with data-confirm submits (capture phase: before htmx sees it).
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);

  // A request that never reached the server still deserves a sentence.
  function say(text) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    var p = document.createElement("p");
    p.className = "error";
    p.textContent = text + " ";
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "dismiss";
    dismiss.textContent = "Dismiss";
    p.append(dismiss);
    flash.replaceChildren(p);
  }
  document.addEventListener("htmx:sendError", function () {
    say("LIMEN did not answer. Check that the server is running; the page retries on its own.");
  });
  // A shutdown's countdown: the seconds until it gives up, from the deadline the row carries.
  setInterval(function () {
    document.querySelectorAll("time.countdown").forEach(function (t) {
      var left = Math.max(0, Math.round((Date.parse(t.getAttribute("datetime")) - Date.now()) / 1000));
      t.textContent = left + " s";
    });
  }, 1000);

  // An action's answer stays until the next action's replaces it, or the person dismisses it:
  // a poll (a GET; after its swap htmx may name the body as its element) never clears it.
  document.addEventListener("htmx:afterRequest", function (e) {
    var flash = document.getElementById("flash");
    var verb = e.detail.requestConfig && e.detail.requestConfig.verb;
    if (e.detail.successful && flash && verb && verb !== "get") flash.replaceChildren();
  });
  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("#flash button.dismiss")) {
      document.getElementById("flash").replaceChildren();
    }
  });
})();
