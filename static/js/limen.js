// LIMEN's page behaviour. No inline scripts: everything lives here.
(function () {
  "use strict";

  // Poll only while the tab is visible; ask at once when it becomes visible again.
  // Nor while an action a person started waits for its answer: that answer brings what the
  // poll would, and a poll's swap would take away the form it is meant for.
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (!e.detail.elt.hasAttribute("data-poll")) return;
    if (document.hidden || document.querySelector("form.htmx-request, button.htmx-request")) e.preventDefault();
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

  // The message area holds answers, newest first, each about one VM (data-about: its UUID),
  // about one read of no VM (its path: a poll of the table), or about the page (""). An answer
  // stays until dismissed or until a newer one about the same thing comes: a request takes
  // away the older answer about what it acts on as it leaves.
  function about(path) {
    var found = /\/vms\/([0-9a-f-]{36})(\/|$)/.exec(path || "");
    return found ? found[1] : "";
  }
  function aboutRead(path) {
    return about(path) || (path || "").split("?")[0];
  }
  function forget(subject) {
    document.querySelectorAll("#flash > [data-about]").forEach(function (answer) {
      if (answer.dataset.about === subject) answer.remove();
    });
  }
  // A request that never reached the server still deserves a sentence.
  function say(text) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    forget("unanswered");
    var p = document.createElement("p");
    p.className = "error";
    p.dataset.about = "unanswered";
    p.textContent = text + " ";
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "dismiss";
    dismiss.textContent = "Dismiss";
    p.append(dismiss);
    flash.prepend(p);
  }
  document.addEventListener("htmx:sendError", function () {
    say("LIMEN did not answer. Check that the server is running; the page retries on its own.");
  });
  // Once LIMEN answers again, that sentence is no longer true.
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.successful) forget("unanswered");
  });
  // A shutdown's countdown: the seconds until it gives up, from the deadline the row carries.
  setInterval(function () {
    document.querySelectorAll("time.countdown").forEach(function (t) {
      var left = Math.max(0, Math.round((Date.parse(t.getAttribute("datetime")) - Date.now()) / 1000));
      t.textContent = left + " s";
    });
  }, 1000);

  document.addEventListener("htmx:beforeRequest", function (e) {
    var config = e.detail.requestConfig;
    if (config && config.verb !== "get") forget(about(config.path));
  });
  // A poll's error is a newer answer about its VM too: it takes the place of the older one.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var config = e.detail.requestConfig;
    if (e.detail.isError && config && config.verb === "get") forget(aboutRead(config.path));
  });
  // Any other request (an action, a new search) makes what a poll on its way brings stale:
  // that poll is called off, and the answer brings a poller of its own.
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (e.detail.elt.hasAttribute("data-poll")) return;
    document.querySelectorAll("[data-poll]").forEach(function (poller) {
      htmx.trigger(poller, "htmx:abort");
    });
  });
  document.addEventListener("click", function (e) {
    var dismiss = e.target.closest && e.target.closest("#flash button.dismiss");
    if (dismiss) (dismiss.closest("#flash > *") || dismiss).remove();
  });

  // A search's URL names only what is set: "/?q=web", not "/?q=web&state=&owner=".
  document.addEventListener("htmx:configRequest", function (e) {
    if (e.detail.verb !== "get" || !e.detail.elt.closest("#vm-filters")) return;
    var empty = [];
    e.detail.formData.forEach(function (value, key) { if (value === "") empty.push(key); });
    empty.forEach(function (key) { e.detail.formData.delete(key); });
  });

  // Back and Forward bring back a table htmx kept; its search form says what the URL says
  // (what was typed since belongs to a later page of the history).
  document.addEventListener("htmx:historyRestore", function () {
    var form = document.getElementById("vm-filters");
    if (!form) return;
    var args = new URLSearchParams(window.location.search);
    Array.prototype.forEach.call(form.querySelectorAll("input[type=search], select"), function (field) {
      field.value = args.get(field.name) || "";
    });
  });

  // "/" goes to the search, as in most tables on the web (not while typing in a field).
  document.addEventListener("keydown", function (e) {
    var search = document.querySelector("input[type=search][aria-keyshortcuts='/']");
    var typing = e.target.closest && e.target.closest("input, textarea, select, [contenteditable]");
    if (e.key === "/" && search && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      search.focus();
      search.select();
    }
  });


  // The table's rows are swapped as they change: the boxes a person ticked stay ticked, and
  // the menu they opened stays open (each has an id that outlives its row's element).
  var ticked = new Set(), opened = new Set();
  document.addEventListener("change", function (e) {
    var box = e.target;
    if (box.id === "select-all") {
      document.querySelectorAll("#vm-rows input[form=bulk]").forEach(function (b) {
        b.checked = box.checked;
        if (box.checked) ticked.add(b.value); else ticked.delete(b.value);
      });
    } else if (box.matches && box.matches("#vm-rows input[form=bulk]")) {
      if (box.checked) ticked.add(box.value); else ticked.delete(box.value);
    }
  });
  document.addEventListener("toggle", function (e) {
    if (!e.target.matches || !e.target.matches("details.menu")) return;
    if (e.target.open) opened.add(e.target.id); else opened.delete(e.target.id);
  }, true);
  function restoreRows() {
    document.querySelectorAll("#vm-rows input[form=bulk]").forEach(function (b) {
      b.checked = ticked.has(b.value);
    });
    // Only a menu new to the page is opened here: one already seen is as the person left it
    // (its toggle event may not have come yet, so "opened" can be a moment behind).
    document.querySelectorAll("#vm-rows details.menu:not([data-seen])").forEach(function (menu) {
      menu.dataset.seen = "";
      if (opened.has(menu.id)) menu.open = true;
    });
    var all = document.getElementById("select-all");
    var boxes = document.querySelectorAll("#vm-rows input[form=bulk]");
    if (all) all.checked = boxes.length > 0 && Array.prototype.every.call(boxes, function (b) { return b.checked; });
  }
  document.addEventListener("htmx:afterSettle", restoreRows);
  document.addEventListener("htmx:oobAfterSwap", restoreRows);
  // A bulk action done: its boxes are cleared, as its answer says what became of them.
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.successful && e.detail.elt.closest && e.detail.elt.closest("#bulk")) {
      ticked.clear();
      restoreRows();
    }
  });

  // An action can take away the button that had the focus (Pause becomes Resume): the focus
  // then goes to what stands in its place, the row's More (or its first control), or the VM
  // page's first action, rather than back to the top of the page. An action chosen from a
  // menu closes the menu.
  var focusHome = null;
  document.addEventListener("focusin", function (e) {
    var home = e.target.closest && e.target.closest("#vm-rows tr[id], #vm-head");
    if (home) focusHome = home.id;
  });
  // (The menu closes once the request has left: htmx reads the button pressed until then.)
  var chosenMenu = null;
  document.addEventListener("click", function (e) {
    var chosen = e.target.closest && e.target.closest("details.menu .menu-items button");
    if (chosen && !e.defaultPrevented) chosenMenu = chosen.closest("details.menu");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var menu = chosenMenu;
    chosenMenu = null;
    if (!menu) return;
    opened.delete(menu.id);
    menu.open = false;
    menu.querySelector("summary").focus();
  });
  document.addEventListener("htmx:afterSettle", function () {
    setTimeout(function () {  // once every part of the answer has settled
      var active = document.activeElement;
      if ((active && active !== document.body) || !focusHome) return;
      var home = document.getElementById(focusHome);
      var next = home && (home.querySelector("details.menu summary") ||
        home.querySelector(".hub-actions button, td.actions button, td.actions a, button, a[href]"));
      if (next) next.focus();
    }, 0);
  });

  // Escape closes the open menu and gives the focus back to its button.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") return;
    var menu = e.target.closest && e.target.closest("details.menu[open]");
    menu = menu || document.querySelector("details.menu[open]");
    if (!menu) return;
    opened.delete(menu.id);
    menu.open = false;
    menu.querySelector("summary").focus();
  });
})();
