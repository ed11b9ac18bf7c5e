// Herald console: the live parts. Polls the console's own /live/ endpoints (same origin, the
// session cookie) and updates statuses in place, so a message turns sent/delivered without a reload.
(function () {
  "use strict";
  var POLL_MS = 1000;

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function badge(status) {
    return '<span class="status s-' + esc(status) + '">' + esc(status) + "</span>";
  }
  function when(v) {
    return v ? '<time datetime="' + esc(v) + '">' + esc(v.slice(0, 19).replace("T", " ")) + "</time>" : "—";
  }

  function update(el, m) {
    var s = el.querySelector(".js-status");
    if (s && s.textContent.trim() !== m.status) s.innerHTML = badge(m.status);
    var r = el.querySelector(".js-reason");
    if (r) r.textContent = m.status_reason || "";
    var w = el.querySelector(".js-waiting");
    if (w) w.innerHTML = m.waiting ? "Waiting: " + esc(m.waiting.reason) + (m.waiting.until ? " until " + when(m.waiting.until) : "") : "";
    var h = el.querySelector(".js-history");
    if (h && m.history) {
      h.innerHTML = m.history.map(function (e) {
        return "<li>" + badge(e.status) + " " + when(e.at) + ' <span class="muted">' + esc(e.reason || "") + "</span></li>";
      }).join("");
    }
    if (m.settled) el.setAttribute("data-settled", "");
  }

  function pollMessages() {
    var els = Array.prototype.slice.call(document.querySelectorAll("[data-message-id]:not([data-settled])"));
    if (!els.length) return;
    var ids = els.map(function (e) { return e.getAttribute("data-message-id"); });
    fetch("/live/messages?ids=" + encodeURIComponent(ids.join(",")), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return;
        els.forEach(function (el) {
          var m = body.messages[el.getAttribute("data-message-id")];
          if (m) update(el, m);
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(pollMessages, POLL_MS); });
  }

  function pollSession() {
    var el = document.querySelector('[data-live="session"]');
    if (!el) return;
    fetch("/live/channels/" + el.getAttribute("data-channel-id") + "/session", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        var st = el.querySelector(".js-session-state");
        if (st) st.textContent = s.state;
        var qr = el.querySelector(".js-qr");
        if (qr) qr.innerHTML = s.qr && s.qr.image ? '<img alt="QR code: scan it with WhatsApp to connect" width="240" height="240" src="' + esc(s.qr.image) + '">' : "";
        setTimeout(pollSession, 3000);
      })
      .catch(function () { setTimeout(pollSession, 5000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setTimeout(pollMessages, POLL_MS);
    setTimeout(pollSession, 3000);
  });
})();
