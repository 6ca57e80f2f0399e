// Reader-study keyboard shortcuts: class letters pick a class, 1-5 the confidence, Enter saves,
// ? opens the help. The form works without this script (plain POST, one answer per request).
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  var help = document.getElementById("help");
  document.documentElement.classList.add("js");
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var target = event.target;
    if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"))) return;
    if (event.key === "?") {
      if (help) { help.open = !help.open; if (help.open) help.scrollIntoView({ block: "nearest" }); }
      event.preventDefault();
      return;
    }
    if (!form) return;
    if (event.key === "Enter") {
      if (target && target.tagName === "SUMMARY") return;
      event.preventDefault();
      var save = document.getElementById("save");
      if (save && !save.disabled) form.requestSubmit(save);
      return;
    }
    var key = event.key.toLowerCase();
    var input = form.querySelector('.class-buttons input[data-key="' + key + '"], .likert input[data-key="' + key + '"]');
    if (input && !input.disabled) {
      input.checked = true;
      input.focus();
      event.preventDefault();
    }
  });
  if (form) {
    form.addEventListener("submit", function () {
      // One request per answer: a second Enter while the first is on its way sends nothing more.
      var save = document.getElementById("save");
      if (save) { window.setTimeout(function () { save.disabled = true; }, 0); }
    });
  }
})();
