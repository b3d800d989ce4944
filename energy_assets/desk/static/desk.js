// The desk page keeps itself current: the service pushes the changed part of the page
// ("live") and the trader list ("nav") as Server-Sent Events; the page never reloads.
// The browser's tabs share one event stream, held by desk-worker.js as a SharedWorker:
// browsers open at most six HTTP/1.1 connections per host, so a stream per tab leaves a
// seventh tab loading forever. Where SharedWorker is missing, the same script runs as this
// tab's own worker (a stream per tab, as before).
(function () {
  "use strict";
  var root = document.documentElement;
  var live = document.getElementById("live");
  var pick = document.getElementById("pick");
  var status = document.getElementById("connection");
  var topic = root.getAttribute("data-topic");
  var selected = pick ? pick.value : "";

  function fmtAge(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function tickAges() {
    var els = document.querySelectorAll("[data-ts]");
    var now = Date.now();
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-ts"));
      if (isNaN(t)) continue;
      // A price older than the vendor's latest revision slot: a newer one is out.
      var staleAt = Date.parse(els[i].getAttribute("data-stale-after") || "");
      var stale = !isNaN(staleAt) && now >= staleAt;
      els[i].classList.toggle("stale", stale);
      els[i].textContent = fmtAge(Math.max(0, (now - t) / 1000)) + (stale ? " · stale" : "");
    }
  }

  // Gate closure (templates/gate.html): each step counts down to its data-gate-closure and
  // changes state by gate.state_at's rule: closed from gate closure on; "closing soon" while
  // an open position (data-held: the trader's, or on the desk's board any trader's) has under
  // 15 minutes left; else open.
  var CLOSING_SOON_MS = 15 * 60 * 1000;
  var STATE_TEXT = {open: "open", closing: "closing soon: open position", closed: "closed"};
  var clocks = {};

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function fmtLeft(ms) {
    var s = Math.floor(ms / 1000);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }

  function tickGates(now) {
    var rows = document.querySelectorAll("tr[data-gate-closure]");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var closes = Date.parse(row.getAttribute("data-gate-closure"));
      if (isNaN(closes)) continue;
      var held = row.getAttribute("data-held") === "1";
      var left = closes - now;
      var state = left <= 0 ? "closed" : held && left < CLOSING_SOON_MS ? "closing" : "open";
      if (row.getAttribute("data-state") !== state) {
        row.setAttribute("data-state", state);
        row.classList.remove("open", "closing", "closed");
        row.classList.add(state);
      }
      var leftCell = row.querySelector("td.left"), stateCell = row.querySelector("td.state");
      if (leftCell) leftCell.textContent = state === "closed" ? "closed" : fmtLeft(left);
      if (stateCell) stateCell.textContent = STATE_TEXT[state];
    }
    var zones = document.querySelectorAll("time.clock[data-tz]");
    for (var j = 0; j < zones.length; j++) {
      var zone = zones[j].getAttribute("data-tz");
      try {
        clocks[zone] = clocks[zone] || new Intl.DateTimeFormat("en-GB", {
          timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
        });
        zones[j].textContent = clocks[zone].format(now);
      } catch (err) { /* a zone this browser does not know: the server's abbreviation stays */ }
    }
  }

  function tick() {
    tickAges();
    tickGates(Date.now());
  }

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "connection " + cls;
  }

  function receive(event) {
    var message = event.data;
    if (message.type === "live" && message.topic === topic) {
      live.innerHTML = message.html;
      root.setAttribute("data-event-id", message.id);
      window.deskUpdates = (window.deskUpdates || 0) + 1;
      tick();
      setStatus("live", "live");
    } else if (message.type === "nav" && pick) {
      pick.innerHTML = message.html;
      pick.value = selected;
    } else if (message.type === "status") {
      setStatus(message.text, message.state);
    } else if (message.type === "login") {
      location.reload();
    }
  }

  var port;
  if (typeof SharedWorker === "function") {
    port = new SharedWorker("/static/desk-worker.js", {name: "desk"}).port;
    port.onmessage = receive;
  } else {
    port = new Worker("/static/desk-worker.js");
    port.onmessage = receive;
  }

  function follow() {
    port.postMessage({type: "follow", topic: topic, since: root.getAttribute("data-event-id") || ""});
  }

  if (pick) pick.addEventListener("change", function () { location.href = pick.value; });
  window.addEventListener("pagehide", function () { port.postMessage({type: "leave"}); });
  window.addEventListener("pageshow", function (event) { if (event.persisted) follow(); });
  tick();
  setInterval(tick, 1000);
  follow();
})();
