// Reader-study pages: keyboard shortcuts (class letters pick a class, 1-5 the confidence, Enter
// saves, ? opens or closes the help), the help in a dialog, and a Save button that is enabled once
// the answer is complete. Everything works without this script: a plain form POST per answer
// (the server validates), and the help as a <details> at the end of the page.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var form = document.getElementById("answer-form");
  var save = document.getElementById("save");
  var helpDialog = document.getElementById("help-dialog");
  var helpBody = document.getElementById("help-body");

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
})();
