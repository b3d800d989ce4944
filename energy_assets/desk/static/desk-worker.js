// One event stream for all the desk's tabs in this browser (desk.js says why). Each tab sends
// {type: "follow", topic, since}: the page it shows and the event id it was rendered at. The
// stream follows the set of those pages and is reopened when the set changes, from the oldest
// event a tab needs, so no tab misses a change; each "live" event goes to the tabs showing its
// page. Runs as a SharedWorker, or as one tab's own Worker where SharedWorker is missing.
"use strict";

var tabs = [];          // {port, topic}
var source = null;      // the EventSource
var following = "";     // its topics, "\n"-joined
var lastId = null;      // the last event id received (null: none yet)
var pending = null;     // the oldest id a tab joined with since the stream opened
var latest = {};        // topic -> {id, html}: what a tab joining late is caught up with
var timer = null;
var state = {state: "reconnecting", text: "connecting…"};

// The earlier of two ids "<boot>-<change>"; "" (every page's current state) when either is
// empty or they come from different runs of the service.
function older(a, b) {
  if (!a || !b) return "";
  var pa = a.split("-"), pb = b.split("-");
  if (pa.length !== 2 || pb.length !== 2 || pa[0] !== pb[0]) return "";
  return Number(pa[1]) <= Number(pb[1]) ? a : b;
}

function post(port, message) {
  try { port.postMessage(message); } catch (err) { /* a tab gone */ }
}

function setState(next) {
  state = next;
  tabs.forEach(function (tab) { post(tab.port, {type: "status", state: next.state, text: next.text}); });
}

function topics() {
  var seen = {};
  tabs.forEach(function (tab) { seen[tab.topic] = true; });
  return Object.keys(seen).sort();
}

function schedule(delay) {
  if (timer === null) timer = setTimeout(open, delay);
}

function open() {
  timer = null;
  var list = topics();
  var key = list.join("\n");
  if (source && key === following) return;
  if (source) source.close();
  source = null;
  following = key;
  if (!list.length) return;
  var since = lastId === null ? pending : pending === null ? lastId : older(lastId, pending);
  pending = null;
  lastId = since;
  var url = "/events?" + list.map(function (t) { return "topic=" + encodeURIComponent(t); }).join("&");
  if (since) url += "&since=" + encodeURIComponent(since);
  var stream = new EventSource(url);
  source = stream;
  stream.onopen = function () { setState({state: "live", text: "live"}); };
  stream.addEventListener("live", function (event) {
    var message = JSON.parse(event.data);
    lastId = event.lastEventId;
    latest[message.topic] = {id: lastId, html: message.html};
    tabs.forEach(function (tab) {
      if (tab.topic === message.topic) {
        post(tab.port, {type: "live", topic: message.topic, html: message.html, id: lastId});
      }
    });
    setState({state: "live", text: "live"});
  });
  stream.addEventListener("login", function () {
    // The login has ended: every tab reloads, which takes it to the login.
    stream.close();
    source = null;
    following = "";
    tabs.forEach(function (tab) { post(tab.port, {type: "login"}); });
  });
  stream.addEventListener("nav", function (event) {
    tabs.forEach(function (tab) { post(tab.port, {type: "nav", html: event.data}); });
  });
  stream.onerror = function () {
    setState({state: "reconnecting", text: "reconnecting…"});
    if (stream.readyState === EventSource.CLOSED && source === stream) {
      // The browser gave up (the service restarting, or refusing): try again in a second.
      source = null;
      following = "";
      schedule(1000);
    }
  };
}

function handle(port, message) {
  var at = -1;
  tabs.forEach(function (tab, i) { if (tab.port === port) at = i; });
  if (message.type === "leave") {
    if (at >= 0) tabs.splice(at, 1);
    schedule(1000);
    return;
  }
  if (message.type !== "follow") return;
  if (at >= 0) tabs[at].topic = message.topic;
  else tabs.push({port: port, topic: message.topic});
  post(port, {type: "status", state: state.state, text: state.text});
  var known = latest[message.topic];
  if (known && older(known.id, message.since) !== known.id) {
    post(port, {type: "live", topic: message.topic, html: known.html, id: known.id});
  }
  if (following.split("\n").indexOf(message.topic) < 0 || !source) {
    pending = pending === null ? message.since : older(pending, message.since);
    schedule(50);
  }
}

if (typeof SharedWorkerGlobalScope !== "undefined" && self instanceof SharedWorkerGlobalScope) {
  self.onconnect = function (event) {
    var port = event.ports[0];
    port.onmessage = function (m) { handle(port, m.data); };
  };
} else {
  self.onmessage = function (m) { handle(self, m.data); };
}
