// Reader-study pages: keyboard shortcuts (class letters pick a class, 1-5 the confidence, Enter
// saves, ? opens or closes the help), the help in a dialog, a Save button that is enabled once
// the answer is complete, and in Task 2 an enlarged view of each similar case whose use is
// recorded (which neighbour, when, for how long). Everything works without this script: a plain
// form POST per answer (the server validates), the help as a <details> at the end of the page,
// and the similar cases at their size on the page.
(function () {
  "use strict";
  // The case counts as shown from here: the server has served it (its `shown` token) by now, so
  // the times measured from here never run ahead of the server's.
  var shownAt = now();
  document.documentElement.classList.add("js");
  var form = document.getElementById("answer-form");
  var save = document.getElementById("save");
  var helpDialog = document.getElementById("help-dialog");
  var helpBody = document.getElementById("help-body");
  var enlarge = initEnlarge(document.querySelector("section.similar[data-views-url]"),
                            document.getElementById("enlarge"));

  function now() {
    return window.performance && performance.now ? performance.now() : Date.now();
  }

  // --- Help window ---------------------------------------------------------------------------
  if (helpDialog && helpBody && typeof helpDialog.showModal === "function") {
    helpDialog.appendChild(helpBody);
    var details = document.getElementById("help");
    if (details) details.hidden = true;
    var openers = document.querySelectorAll(".help-open");
    Array.prototype.forEach.call(openers, function (button) {
      button.addEventListener("click", function () { helpDialog.showModal(); });
    });
    helpDialog.querySelector(".help-close").addEventListener("click", function () { helpDialog.close(); });
    helpDialog.addEventListener("click", function (event) {
      if (event.target === helpDialog) helpDialog.close(); // a click on the backdrop
    });
  } else {
    helpDialog = null;
    Array.prototype.forEach.call(document.querySelectorAll(".help-open"), function (b) { b.hidden = true; });
  }

  function toggleHelp() {
    if (helpDialog) {
      if (helpDialog.open) helpDialog.close(); else helpDialog.showModal();
      return;
    }
    var details = document.getElementById("help");
    if (details) { details.open = !details.open; if (details.open) details.scrollIntoView({ block: "nearest" }); }
  }

  // --- Save: enabled once a class and a confidence (and, where asked, every relevance) are chosen
  function groups() {
    var names = [];
    Array.prototype.forEach.call(form.querySelectorAll('input[type="radio"]'), function (input) {
      if (names.indexOf(input.name) < 0) names.push(input.name);
    });
    return names;
  }

  function missing() {
    var what = [];
    groups().forEach(function (name) {
      if (form.querySelector('input[name="' + name + '"]:checked')) return;
      if (name === "answer") what.push("a class");
      else if (name === "confidence") what.push("your confidence");
      else if (what.indexOf("every relevance") < 0) what.push("every relevance");
    });
    return what;
  }

  function update() {
    if (!form || !save) return;
    var what = missing();
    save.disabled = what.length > 0;
    var note = form.querySelector('[data-slot="missing"]');
    if (note) note.textContent = what.length ? "Choose " + what.join(" and ") + " to save." : "";
  }

  if (form && save) {
    form.addEventListener("change", update);
    form.addEventListener("submit", function (event) {
      if (missing().length) { event.preventDefault(); update(); return; }
      if (enlarge) enlarge.send(); // what is still unsent goes with the answer (a keepalive fetch)
      // One request per answer: a second Enter while the first is on its way sends nothing more.
      window.setTimeout(function () { save.disabled = true; }, 0);
    });
    // Coming back to the page from the browser's history: recompute (the button was disabled on submit).
    window.addEventListener("pageshow", update);
    update();
  }

  // --- Keyboard ------------------------------------------------------------------------------
  function typing(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && ["radio", "checkbox", "button", "submit"].indexOf(target.type) < 0;
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.isComposing) return;
    var target = event.target;
    if (typing(target)) return;
    if (enlarge && enlarge.isOpen()) return; // the enlarged case is modal: its own keys only (Escape closes it)
    if (event.key === "?") {
      toggleHelp();
      event.preventDefault();
      return;
    }
    if (helpDialog && helpDialog.open) return; // the help is modal: its own keys only
    if (!form) return;
    if (event.key === "Enter") {
      // Enter on a link or another button (Sign out, Help, Pause) does what it says.
      if (target && target !== save && target.closest && target.closest("a, button, summary")) return;
      event.preventDefault();
      if (save && !save.disabled && !event.repeat) form.requestSubmit(save);
      return;
    }
    if (event.key.length !== 1) return;
    var key = event.key.toLowerCase();
    var input = form.querySelector('.class-buttons input[data-key="' + key + '"], .likert input[data-key="' + key + '"]');
    if (input && !input.matches(":disabled")) {
      if (!input.checked) input.click(); // checks it and fires "change"
      input.focus();
      event.preventDefault();
    }
  });

  // --- Task 2: enlarge a similar case, and record it -------------------------------------------
  // Each similar case becomes a button (click, Enter or Space) that opens it large beside the
  // case being read. Each enlargement is recorded as {id, rank, seconds_after_shown, seconds_open}
  // and sent when it is closed, again with the answer, and by beacon when the page is hidden: the
  // id makes a batch sent twice harmless. Only what the page shows is used: the same image URLs,
  // ranks and class names; nothing else about the neighbours reaches the page.
  function initEnlarge(section, dialog) {
    if (!section || !dialog || typeof dialog.showModal !== "function") return null;
    var url = section.dataset.viewsUrl;
    var csrf = form && form.querySelector('input[name="csrfmiddlewaretoken"]');
    var shown = form && form.querySelector('input[name="shown"]');
    var caseImage = document.querySelector('[data-testid="case-image"]');
    var target = document.getElementById("enlarge-case");
    var query = document.getElementById("enlarge-query");
    var pending = []; // finished enlargements the server has not acknowledged
    var current = null; // the open one
    var opener = null;
    var MAX_BATCH = 200; // the server takes at most this many per request

    Array.prototype.forEach.call(section.querySelectorAll("li.neighbour[data-rank]"), function (li) {
      var figure = li.querySelector("figure");
      var image = figure && figure.querySelector("img");
      if (!image) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "enlarge";
      button.setAttribute("aria-haspopup", "dialog");
      button.setAttribute("aria-label", "Enlarge rank " + li.dataset.rank + ": " + text(li, ".label"));
      figure.insertBefore(button, image);
      button.appendChild(image);
      button.addEventListener("click", function () { open(li, button); });
    });

    function text(root, selector) {
      var element = root.querySelector(selector);
      return element ? element.textContent : "";
    }

    function copyImage(into, from) {
      into.setAttribute("src", from.getAttribute("src"));
      into.alt = from.alt;
    }

    function open(li, button) {
      finish(); // (one at a time; a second open cannot happen while the dialog is modal)
      target.style.setProperty("--c", li.style.getPropertyValue("--c"));
      copyImage(target.querySelector("img"), li.querySelector("img"));
      if (caseImage) copyImage(query.querySelector("img"), caseImage);
      // The credit line goes with the enlarged image too (the ISIC terms); "" when the case has none.
      ["rank", "label", "code", "credit"].forEach(function (name) {
        target.querySelector('[data-slot="' + name + '"]').textContent = text(li, "." + name).trim();
      });
      document.getElementById("enlarge-title").textContent = "Rank " + li.dataset.rank + ": " + text(li, ".label");
      current = { id: newId(), rank: Number(li.dataset.rank), opened: now() };
      opener = button;
      dialog.showModal();
      dialog.querySelector("[data-close]").focus();
    }

    function seconds(milliseconds) {
      return Math.max(0, Math.round(milliseconds)) / 1000;
    }

    function finish() {
      if (!current) return;
      pending.push({ id: current.id, rank: current.rank, seconds_after_shown: seconds(current.opened - shownAt),
                     seconds_open: seconds(now() - current.opened) });
      current = null;
    }

    function newId() {
      var bytes = new Uint8Array(12);
      window.crypto.getRandomValues(bytes);
      return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    }

    function body(batch) {
      var data = new URLSearchParams();
      data.set("csrfmiddlewaretoken", csrf ? csrf.value : "");
      data.set("shown", shown ? shown.value : "");
      data.set("views", JSON.stringify(batch));
      return data;
    }

    function acknowledge(batch) {
      pending = pending.filter(function (view) { return batch.indexOf(view) < 0; });
    }

    function send(beacon) {
      if (!pending.length) return;
      var batch = pending.slice(0, MAX_BATCH);
      if (beacon && navigator.sendBeacon && navigator.sendBeacon(url, body(batch))) {
        acknowledge(batch); // queued by the browser, which delivers it after the page is gone
        return;
      }
      window.fetch(url, { method: "POST", body: body(batch), credentials: "same-origin", keepalive: true,
                          headers: { Accept: "application/json" } })
        .then(function (response) {
          // Stored, or refused for good (a 4xx says why; sending it again would not help).
          if (response.status < 500) acknowledge(batch);
        })
        .catch(function () { /* kept: sent again with the answer or when the page is hidden */ });
    }

    dialog.querySelector("[data-close]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    dialog.addEventListener("close", function () {
      finish();
      send(false);
      if (opener) opener.focus();
    });
    window.addEventListener("pagehide", function () {
      finish(); // an enlargement still open when the page goes counts until now
      send(true);
    });

    return {
      isOpen: function () { return dialog.open; },
      send: function () { finish(); send(false); },
    };
  }
})();
