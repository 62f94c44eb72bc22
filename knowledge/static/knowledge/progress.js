// Live document progress: every element `.kb-doc[data-document][data-kb]` on the page follows its
// document's stage and percentage over /ws/knowledge/<kb>/ (reconnecting with backoff). No build step.
(function () {
  "use strict";
  const colours = { ready: "#2e7d32", failed: "#c62828", cancelled: "#b45309" };
  const seen = {};
  function render(doc) {
    if (seen[doc.id] && seen[doc.id] > doc.updated) { return; } // an older frame than what is shown
    seen[doc.id] = doc.updated;
    document.querySelectorAll('.kb-doc[data-document="' + doc.id + '"]').forEach(function (el) {
      const bar = el.querySelector("progress"), status = el.querySelector(".kb-status"), pct = el.querySelector(".kb-pct");
      if (bar) { bar.value = doc.progress; bar.setAttribute("aria-label", doc.status_label); }
      if (status) { status.textContent = doc.status_label; status.style.color = colours[doc.status] || "#1d4ed8"; }
      if (pct) { pct.textContent = doc.progress + "%"; }
      el.dataset.status = doc.status;
      const row = el.closest("tr");
      const error = row && row.querySelector(".field-error, .field-short_error");
      if (error) { error.textContent = doc.error || ""; }
      const chunks = row && row.querySelector(".field-chunk_count");
      if (chunks) { chunks.textContent = doc.chunk_count; }
      const pages = row && row.querySelector(".field-pages");
      if (pages && doc.pages !== null) { pages.textContent = doc.pages; }
    });
  }
  function follow(kb, delay) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/knowledge/" + kb + "/");
    socket.onmessage = function (message) {
      const frame = JSON.parse(message.data);
      if (frame.type === "snapshot") { frame.documents.forEach(render); }
      if (frame.type === "document") { render(frame.document); }
      delay = 1000;
    };
    socket.onclose = function (event) {
      if (event.code >= 4000) { return; } // refused: don't retry
      setTimeout(function () { follow(kb, Math.min(delay * 2, 30000)); }, delay);
    };
  }
  const kbs = new Set();
  document.querySelectorAll(".kb-doc[data-kb]").forEach(function (el) { kbs.add(el.dataset.kb); });
  const page = document.querySelector("[data-follow-kb]");
  if (page) { kbs.add(page.dataset.followKb); }
  kbs.forEach(function (kb) { follow(kb, 1000); });
})();
