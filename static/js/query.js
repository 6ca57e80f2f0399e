/* LesionSearch query pages: upload, live result, saliency overlays, enlarge dialog and delete
 * confirmation. Plain JavaScript, no libraries, no build step.
 *
 * Every page also works without this file (a form POST uploads, the server renders a finished
 * result, links open images and a confirmation page); this script enhances them and talks to
 * the REST API (/api/v1/queries/) with the session cookie and the CSRF token.
 */
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  var ACCEPTED_TYPES = ["image/jpeg", "image/png", "image/tiff", "image/webp", "image/bmp", "application/dicom"];
  // DICOM files often have no extension (the server tells them by content): a name without a dot passes.
  var ACCEPTED_NAMES = /\.(jpe?g|png|tiff?|webp|bmp|dcm|dicom)$|^[^.]+$/i;
  var PREVIEWABLE = ["image/jpeg", "image/png", "image/webp", "image/bmp"]; // browsers do not draw TIFF
  var FINAL = { done: true, failed: true };
  var STEPS = ["uploaded", "pending", "running", "done"];
  var MIN_POLL_INTERVAL_MS = 1000;
  var MAX_RETRY_DELAY_MS = 30000;

  function byId(id) { return document.getElementById(id); }

  function readJSON(id) {
    var element = byId(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function slot(root, name) { return root.querySelector('[data-slot="' + name + '"]'); }

  function megabytes(bytes) { return (bytes / (1024 * 1024)).toFixed(1) + " MB"; }

  /** The readable message of an API error body: {"error": {"status", "code", "message", "fields"}}. */
  function apiMessage(status, body) {
    var error = body && body.error;
    if (error && error.fields) {
      for (var field in error.fields) {
        if (error.fields[field].length) return String(error.fields[field][0]);
      }
    }
    if (error && typeof error.message === "string") return error.message;
    if (body && typeof body.detail === "string") return body.detail;
    if (body && typeof body === "object") {
      for (var key in body) {
        var value = body[key];
        if (Array.isArray(value) && value.length) return String(value[0]);
        if (typeof value === "string") return value;
      }
    }
    if (status === 413) return "The file is too large to upload.";
    if (status === 403) return "You are not allowed to do this. Your session may have ended: sign in again.";
    return "The server answered with an error (HTTP " + status + "). Please try again.";
  }

  function parseJSON(text) {
    try { return JSON.parse(text); } catch (error) { return null; }
  }

  // --- Upload --------------------------------------------------------------------------

  // The optional neighbour filter in the API's shape (null: none), from the form's fields; the
  // API checks it and its 400 message is shown like any other.
  function filtersOf(form) {
    var filters = {};
    ["sites", "sexes", "datasets"].forEach(function (name) {
      var values = Array.prototype.map.call(
        form.querySelectorAll('input[name="' + name + '"]:checked'), function (box) { return box.value; });
      if (values.length) filters[name] = values;
    });
    ["age_min", "age_max"].forEach(function (name) {
      var field = form.querySelector('input[name="' + name + '"]');
      var value = field ? field.value.trim() : "";
      if (value) filters[name] = /^\d+$/.test(value) ? Number(value) : value;
    });
    return Object.keys(filters).length ? filters : null;
  }

  function initUpload(form) {
    var input = byId("id_image");
    var kInput = byId("id_k");
    var zone = byId("dropzone");
    var errorBox = byId("upload-error");
    var progress = byId("upload-progress");
    var bar = byId("upload-bar");
    var submit = byId("upload-submit");
    var chosen = byId("chosen");
    var preview = byId("preview");
    var chosenName = byId("chosen-name");
    var maxMb = Number(form.dataset.maxMb);
    var maxK = Number(form.dataset.maxK);
    var previewUrl = null;

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = !message;
      if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", message ? "image-help upload-error" : "image-help");
    }

    function problemWith(file) {
      if (!file) return "Choose a dermoscopic image to upload.";
      if (ACCEPTED_TYPES.indexOf(file.type) < 0 && !ACCEPTED_NAMES.test(file.name)) {
        return "\u201c" + file.name + "\u201d is not a supported image type. Use JPEG, PNG, TIFF, WebP, BMP or DICOM.";
      }
      if (file.size === 0) return "\u201c" + file.name + "\u201d is empty.";
      if (file.size > maxMb * 1024 * 1024) {
        return "\u201c" + file.name + "\u201d is " + megabytes(file.size) + "; the largest accepted upload is " + maxMb + " MB.";
      }
      return "";
    }

    function showChosen() {
      var file = input.files[0];
      if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; }
      if (!file) { chosen.hidden = true; showError(""); return; }
      var problem = problemWith(file);
      showError(problem);
      chosen.hidden = false;
      chosenName.textContent = file.name + " \u00b7 " + megabytes(file.size);
      if (!problem && PREVIEWABLE.indexOf(file.type) >= 0) {
        previewUrl = URL.createObjectURL(file);
        preview.src = previewUrl;
        preview.hidden = false;
      } else {
        preview.removeAttribute("src");
        preview.hidden = true;
      }
    }

    input.addEventListener("change", showChosen);

    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || files.length !== 1) {
        showError("Drop exactly one image.");
        return;
      }
      input.files = files;
      showChosen();
    });

    function busy(on) {
      submit.disabled = on;
      progress.hidden = !on;
      form.setAttribute("aria-busy", on ? "true" : "false");
      if (on) bar.value = 0;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = input.files[0];
      var problem = problemWith(file);
      var k = kInput.value.trim();
      if (!problem && k && !(/^\d+$/.test(k) && Number(k) >= 1 && Number(k) <= maxK)) {
        problem = "The number of similar cases must be a whole number from 1 to " + maxK + ".";
        showError(problem);
        kInput.focus();
        return;
      }
      if (problem) {
        showError(problem);
        input.focus();
        return;
      }
      showError("");
      var data = new FormData();
      data.append("image", file, file.name);
      if (k) data.append("k", k);
      var method = byId("id_method");
      if (method && method.value) data.append("method", method.value);
      var filters = filtersOf(form);
      if (filters) data.append("filters", JSON.stringify(filters));
      var request = new XMLHttpRequest();
      request.open("POST", form.dataset.apiUrl);
      request.setRequestHeader("X-CSRFToken", csrfToken());
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      });
      request.addEventListener("load", function () {
        var body = parseJSON(request.responseText);
        if ((request.status === 201 || request.status === 202) && body && body.id) {
          bar.value = 100;
          window.location.assign(form.dataset.resultUrl.replace(/0\/$/, body.id + "/"));
          return;
        }
        busy(false);
        showError(apiMessage(request.status, body));
      });
      request.addEventListener("error", function () {
        busy(false);
        showError("The upload failed: the server could not be reached. Check the connection and try again.");
      });
      busy(true);
      request.send(data);
    });
  }

  // --- Delete confirmation ------------------------------------------------------------

  function initDelete(dialog) {
    var form = dialog.querySelector("form");
    var text = byId("confirm-delete-text");
    var opener = null;
    document.addEventListener("click", function (event) {
      var link = event.target.closest("a[data-delete]");
      if (!link) return;
      event.preventDefault();
      opener = link;
      form.action = link.href;
      var name = link.dataset.deleteName;
      text.textContent = "Query #" + link.dataset.delete + (name ? " (" + name + ")" : "") +
        " will be deleted: the uploaded image and its results are removed permanently.";
      dialog.showModal();
    });
    dialog.querySelector("[data-close]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () { if (opener) opener.focus(); });
  }

  // --- Overlays -----------------------------------------------------------------------

  function setPressed(button, overlay, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
    overlay.hidden = !on;
  }

  function togglePressed(button, overlay) {
    setPressed(button, overlay, button.getAttribute("aria-pressed") !== "true");
  }

  function initOpacity() {
    var slider = byId("overlay-opacity");
    var output = byId("overlay-opacity-value");
    function apply() {
      var text = slider.value + " %";
      document.documentElement.style.setProperty("--overlay-opacity", String(Number(slider.value) / 100));
      slider.setAttribute("aria-valuetext", text);
      output.textContent = text;
    }
    slider.addEventListener("input", apply);
    apply();
  }

  // --- Result page --------------------------------------------------------------------

  function initResult(page) {
    var classes = readJSON("class-data");
    var texts = readJSON("status-texts");
    var data = readJSON("query-data");
    var apiUrl = page.dataset.apiUrl;
    var pollWait = Number(page.dataset.pollWait);
    var list = byId("neighbours");
    var dialog = byId("enlarge");
    var queryToggle = byId("query-overlay-toggle");
    var queryOverlay = byId("query-overlay");
    var elapsedTimer = null;
    var failures = 0;

    initOpacity();
    queryToggle.addEventListener("click", function () { togglePressed(queryToggle, queryOverlay); });

    function neighbourOf(element) { return element.closest("li.neighbour"); }

    list.addEventListener("click", function (event) {
      var toggle = event.target.closest('[data-slot="toggle"]');
      if (toggle) {
        togglePressed(toggle, slot(neighbourOf(toggle), "overlay"));
        return;
      }
      var link = event.target.closest('[data-slot="enlarge"]');
      if (link) {
        event.preventDefault();
        openEnlarge(neighbourOf(link), link);
      }
    });

    // Enlarge dialog: the case beside the query image, overlays on or off together.
    var enlargeCase = byId("enlarge-case");
    var enlargeQuery = byId("enlarge-query");
    var enlargeToggle = byId("enlarge-toggle");
    var enlargeOpener = null;

    function enlargeOverlays(on) {
      enlargeToggle.setAttribute("aria-pressed", on ? "true" : "false");
      [enlargeCase, enlargeQuery].forEach(function (figure) {
        var overlay = figure.querySelector(".overlay");
        overlay.hidden = !on || !overlay.getAttribute("src");
      });
    }

    function copyImage(target, source) {
      var src = source.getAttribute("src");
      if (src) target.setAttribute("src", src); else target.removeAttribute("src");
      target.alt = source.alt;
    }

    function openEnlarge(li, opener) {
      var image = slot(li, "image");
      var overlay = slot(li, "overlay");
      enlargeCase.style.setProperty("--c", li.style.getPropertyValue("--c"));
      copyImage(enlargeCase.querySelector(".base"), image);
      copyImage(enlargeCase.querySelector(".overlay"), overlay);
      copyImage(enlargeQuery.querySelector(".base"), byId("query-image"));
      copyImage(enlargeQuery.querySelector(".overlay"), queryOverlay);
      byId("enlarge-title").textContent = "Rank " + li.dataset.rank + ": " + slot(li, "code").textContent +
        " \u2014 " + slot(li, "label").textContent;
      byId("enlarge-caption").textContent = [
        "Similarity " + slot(li, "similarity").textContent,
        "age " + slot(li, "age").textContent,
        slot(li, "sex").textContent,
        slot(li, "localization").textContent,
        "diagnosis established by " + slot(li, "diagnosis_type").textContent.toLowerCase(),
      ].concat(slot(li, "credit").hidden ? [] : [slot(li, "credit").textContent.trim()]).join(" \u00b7 ");
      enlargeToggle.hidden = !overlay.getAttribute("src") && !queryOverlay.getAttribute("src");
      enlargeOverlays(slot(li, "toggle").getAttribute("aria-pressed") === "true");
      enlargeOpener = opener;
      dialog.showModal();
      dialog.querySelector("[data-close]").focus();
    }

    enlargeToggle.addEventListener("click", function () {
      enlargeOverlays(enlargeToggle.getAttribute("aria-pressed") !== "true");
    });
    dialog.querySelector("[data-close]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    dialog.addEventListener("close", function () { if (enlargeOpener) enlargeOpener.focus(); });

    // Rendering a query payload (the API's JSON) into the page.
    function showSteps(status) {
      var current = STEPS.indexOf(status);
      Array.prototype.forEach.call(byId("status-steps").children, function (item) {
        var index = STEPS.indexOf(item.dataset.step);
        item.classList.toggle("done", index < current || status === "done");
        if (index === current && status !== "done") item.setAttribute("aria-current", "step");
        else item.removeAttribute("aria-current");
      });
    }

    function startElapsed(created) {
      var start = Date.parse(created);
      var detail = byId("status-detail");
      function tick() {
        var seconds = Math.max(0, Math.round((Date.now() - start) / 1000));
        detail.textContent = seconds + " s since upload.";
      }
      if (!elapsedTimer && !isNaN(start)) {
        tick();
        elapsedTimer = window.setInterval(tick, 1000);
      }
    }

    function stopElapsed() {
      if (elapsedTimer) window.clearInterval(elapsedTimer);
      elapsedTimer = null;
    }

    function fillNeighbour(n) {
      var li = byId("neighbour-template").content.firstElementChild.cloneNode(true);
      var cls = classes[n.diagnosis];
      var meta = n.metadata || {};
      li.dataset.rank = n.rank;
      li.style.setProperty("--c", cls ? cls.colour : "#777");
      li.style.setProperty("--c-text", cls ? cls.badge_text : "#fff");
      var link = slot(li, "enlarge");
      link.href = n.image_url;
      link.setAttribute("aria-label", "Enlarge rank " + n.rank + ": " + n.diagnosis_label);
      var image = slot(li, "image");
      image.src = n.image_url;
      image.alt = "Rank " + n.rank + " similar case: " + n.diagnosis_label + " (" + n.diagnosis + "), image " + n.image_id;
      var overlay = slot(li, "overlay");
      var toggle = slot(li, "toggle");
      var overlayLink = slot(li, "overlay-link");
      if (n.saliency_url) {
        overlay.src = n.saliency_url;
        overlay.alt = "Saliency overlay of rank " + n.rank;
        overlayLink.href = n.saliency_url;
        toggle.setAttribute("aria-label", "Saliency overlay of rank " + n.rank);
      } else {
        overlay.removeAttribute("src");
        toggle.hidden = true;
        overlayLink.remove();
      }
      fillEvidence(li, n);
      slot(li, "rank").textContent = "#" + n.rank;
      slot(li, "code").textContent = n.diagnosis;
      slot(li, "label").textContent = n.diagnosis_label;
      slot(li, "similarity").textContent = Number(n.similarity).toFixed(3);
      slot(li, "age").textContent = meta.age === null || meta.age === undefined ? "unknown" : meta.age + " years";
      slot(li, "sex").textContent = meta.sex || "unknown";
      slot(li, "localization").textContent = meta.localization || "unknown";
      slot(li, "diagnosis_type").textContent = meta.diagnosis_type_label || meta.diagnosis_type || "unknown";
      // A case withdrawn from the library after this search: said on the card, with the reason.
      slot(li, "withdrawn").hidden = !n.withdrawn;
      slot(li, "withdrawn-reason").textContent = n.withdrawn ? n.withdrawn.reason : "";
      // The image's credit (the ISIC terms ask for it wherever the image is shown); none: nothing shown.
      slot(li, "credit").hidden = !n.attribution;
      slot(li, "attribution").textContent = n.attribution || "";
      slot(li, "licence").hidden = !n.copyright_license;
      slot(li, "licence").textContent = n.copyright_license ? " \u00b7 " + n.copyright_license : "";
      return li;
    }

    // A neighbour's evidence map pair: it comes in the query's second stage, so it is pending (a
    // spinner), then ready (the pair) or failed (the server's message); null: not computed here.
    function fillEvidence(li, n) {
      var evidence = slot(li, "evidence");
      var state = n.evidence ? n.evidence.status : "";
      evidence.hidden = !n.evidence;
      evidence.dataset.evidence = state;
      slot(li, "evidence-pending").hidden = state !== "pending";
      var failed = slot(li, "evidence-failed");
      failed.hidden = state !== "failed";
      failed.textContent = state === "failed" ? (n.evidence.message || "The evidence maps could not be computed.") : "";
      slot(li, "evidence-pair").hidden = state !== "ready";
      slot(li, "evidence-note").hidden = state !== "ready";
      if (state !== "ready" || slot(li, "evidence-query").getAttribute("src") === n.evidence.query_map_url) return;
      slot(li, "evidence-query-base").src = byId("query-image").src;
      slot(li, "evidence-query").src = n.evidence.query_map_url;
      slot(li, "evidence-query").alt = "Query activation map against rank " + n.rank;
      slot(li, "evidence-case-base").src = n.image_url;
      slot(li, "evidence-case").src = n.evidence.case_map_url;
      slot(li, "evidence-case").alt = "Result activation map of rank " + n.rank;
      evidence.querySelectorAll("figcaption")[1].textContent = "Rank " + n.rank;
    }

    function evidencePending(payload) {
      return payload.status === "done" && payload.neighbours.some(function (n) {
        return n.evidence && n.evidence.status === "pending";
      });
    }

    // The vote's classes in the order the server sent (vote.order: most neighbours first, ties
    // broken by rank), never re-sorted here, so this list and the page rendered by the server agree.
    function renderVote(vote) {
      var section = byId("vote");
      var rows = byId("vote-rows");
      if (!vote || !vote.order) { section.hidden = true; return; }
      rows.textContent = "";
      vote.order.forEach(function (code) {
        var row = byId("vote-row-template").content.firstElementChild.cloneNode(true);
        var count = Number(vote.counts[code]);
        var percent = Math.round((100 * count) / vote.n);
        var cls = classes[code];
        row.style.setProperty("--c", cls ? cls.colour : "#777");
        row.style.setProperty("--share", percent + "%");
        slot(row, "code").textContent = code;
        slot(row, "label").textContent = cls ? cls.label : "";
        slot(row, "count").textContent = count + " of " + vote.n;
        slot(row, "share").textContent = percent + " %";
        rows.appendChild(row);
      });
      section.hidden = vote.order.length === 0;
    }

    function render(payload) {
      var status = payload.status;
      var final = FINAL[status] === true;
      page.dataset.status = status;
      byId("query-status").className = "status-panel status-" + status;
      byId("query-status").hidden = status === "failed"; // the error box says it instead
      byId("status-text").textContent = texts[status] || status;
      byId("status-progress").hidden = final;
      byId("status-steps").hidden = final;
      showSteps(status);

      var error = byId("query-error");
      byId("error-text").textContent = payload.error || "";
      error.hidden = status !== "failed";
      byId("neighbours-panel").hidden = status === "failed";
      byId("report-link").hidden = status !== "done";

      var warning = byId("query-warning");
      byId("warning-text").textContent = payload.warning || "";
      warning.hidden = !payload.warning;

      if (payload.query_saliency_url) {
        if (queryOverlay.getAttribute("src") !== payload.query_saliency_url) queryOverlay.src = payload.query_saliency_url;
        byId("query-overlay-controls").hidden = false;
      }

      if (status === "done" && list.children.length === 0) {
        payload.neighbours.forEach(function (n) { list.appendChild(fillNeighbour(n)); });
        renderVote(payload.neighbour_vote);
      } else if (status === "done") {
        payload.neighbours.forEach(function (n) {
          var li = list.querySelector('li.neighbour[data-rank="' + n.rank + '"]');
          if (li) fillEvidence(li, n);
        });
      }
      list.setAttribute("aria-busy", final ? "false" : "true");
      byId("neighbours-placeholder").hidden = final;

      if (final) {
        stopElapsed();
        byId("status-detail").textContent = status === "done"
          ? payload.neighbours.length + " similar case" + (payload.neighbours.length === 1 ? "" : "s") + " found."
          : "";
      } else {
        startElapsed(payload.created);
      }
      return final && !evidencePending(payload);
    }

    // Long-polls until the query is done (the neighbours appear at once), then until every
    // evidence pair is ready or failed.
    function poll(status) {
      var started = Date.now();
      fetch(apiUrl + "?wait=" + pollWait + (status === "done" ? "&until=evidence" : ""), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }).then(function (response) {
        return response.text().then(function (text) {
          return { status: response.status, body: parseJSON(text) };
        });
      }).then(function (answer) {
        if (answer.status === 404) {
          stopAndReport("This query no longer exists; it may have been deleted.");
          return;
        }
        if (answer.status === 401 || answer.status === 403) {
          stopAndReport(apiMessage(403, answer.body));
          return;
        }
        if (answer.status !== 200 || !answer.body) throw new Error(apiMessage(answer.status, answer.body));
        failures = 0;
        if (!render(answer.body)) {
          var next = answer.body.status;
          // Straight on when the status moved on (the next wait starts now), else not faster than once a second.
          var delay = next !== status ? 0 : Math.max(0, MIN_POLL_INTERVAL_MS - (Date.now() - started));
          window.setTimeout(function () { poll(next); }, delay);
        }
      }).catch(function (error) {
        failures += 1;
        var delay = Math.min(MAX_RETRY_DELAY_MS, 1000 * Math.pow(2, failures));
        byId("status-detail").textContent = "Lost contact with the server (" + error.message +
          "); retrying in " + Math.round(delay / 1000) + " s.";
        stopElapsed();
        window.setTimeout(function () { poll(status); }, delay);
      });
    }

    function stopAndReport(message) {
      stopElapsed();
      byId("status-progress").hidden = true;
      byId("error-text").textContent = message;
      byId("query-error").hidden = false;
      list.setAttribute("aria-busy", "false");
    }

    // A finished query is already rendered by the server (polled on while its evidence maps are
    // pending); a running one is rendered and polled.
    if (!FINAL[data.status]) {
      render(data);
      poll(data.status);
    } else if (evidencePending(data)) {
      poll(data.status);
    }
  }

  function init() {
    var form = byId("upload-form");
    if (form) initUpload(form);
    var confirm = byId("confirm-delete");
    if (confirm) initDelete(confirm);
    var page = byId("query-page");
    if (page) initResult(page);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
