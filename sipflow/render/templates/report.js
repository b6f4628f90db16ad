/* sipflow report: the call table, each call's ladder and its messages, drawn from the JSON block.
   Capture text only ever reaches the page through textContent and SVG text nodes (never innerHTML). */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("sipflow-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var PAGE = 200;
  var COLUMNS = [["n", "#", true], ["start", "Start (UTC)", false], ["from", "From", false], ["to", "To", false],
                 ["outcome", "Outcome", false], ["status", "Code", true], ["pdd", "PDD", true],
                 ["duration", "Duration", true], ["media", "Media", false], ["mos", "MOS", true],
                 ["anomalies", "Anomalies", true]];
  var state = {sort: "n", dir: 1, text: "", outcome: "", since: "", until: "", page: 0, call: null,
               timeMode: "rel"};

  function h(tag, attrs, kids) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (k) {
      node.appendChild(typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k);
    });
    return node;
  }
  function s(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function pad(n, w) { n = String(n); while (n.length < w) n = "0" + n; return n; }
  function clock(ts) {
    var d = new Date(ts * 1000);
    return pad(d.getUTCHours(), 2) + ":" + pad(d.getUTCMinutes(), 2) + ":" + pad(d.getUTCSeconds(), 2) + "." +
      pad(d.getUTCMilliseconds(), 3);
  }
  function dateTime(ts) {
    var d = new Date(ts * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1, 2) + "-" + pad(d.getUTCDate(), 2) + " " + clock(ts);
  }
  function secs(v) { return v === null || v === undefined ? "-" : v.toFixed(2) + " s"; }
  function cell(row, key) {
    var v = row[key];
    if (key === "start") return dateTime(v);
    if (key === "pdd" || key === "duration") return secs(v);
    if (v === null || v === undefined) return "-";
    return String(v);
  }

  // ---- the call table --------------------------------------------------------------------------
  var outcomes = {};
  DATA.calls.forEach(function (c) { outcomes[c.outcome] = (outcomes[c.outcome] || 0) + 1; });
  var select = document.getElementById("outcome");
  Object.keys(outcomes).sort().forEach(function (o) {
    select.appendChild(h("option", {value: o}, [o + " (" + outcomes[o] + ")"]));
  });
  var headRow = document.querySelector("#calls thead tr");
  COLUMNS.forEach(function (col) {
    var th = h("th", {"data-key": col[0], "class": col[2] ? "num" : "", scope: "col", tabindex: "0"}, [col[1]]);
    th.addEventListener("click", function () { sortBy(col[0]); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(col[0]); });
    headRow.appendChild(th);
  });

  function sortBy(key) {
    state.dir = state.sort === key ? -state.dir : 1;
    state.sort = key;
    state.page = 0;
    drawTable();
  }
  function rows() {
    var text = state.text.toLowerCase();
    var out = DATA.calls.filter(function (c) {
      if (state.outcome && c.outcome !== state.outcome) return false;
      if (state.since || state.until) {           // a time of day (UTC), compared as text: HH:MM:SS.mmm
        var at = clock(c.start);
        if (state.since && at < state.since) return false;
        if (state.until && at.slice(0, state.until.length) > state.until) return false;
      }
      if (!text) return true;
      return [c.from, c.to, c.call_id, c.agent, c.status === null ? "" : String(c.status), c.media, c.outcome]
        .some(function (v) { return String(v).toLowerCase().indexOf(text) >= 0; });
    });
    var key = state.sort, dir = state.dir;
    out.sort(function (a, b) {
      var x = a[key], y = b[key];
      if (x === y) return a.n - b.n;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    return out;
  }
  function drawTable() {
    var list = rows();
    var pages = Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var body = document.querySelector("#calls tbody");
    var fresh = h("tbody");
    list.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (c) {
      var tr = h("tr", {"data-n": c.n, tabindex: "0", "class": c.n === state.call ? "selected" : ""});
      COLUMNS.forEach(function (col) {
        var td = h("td", {"class": (col[2] ? "num " : "") + (col[0] === "outcome" ? "o-" + c.outcome.replace(/ /g, "-") : "")},
                   [cell(c, col[0])]);
        if (col[0] === "from" || col[0] === "to") td.title = c.call_id;
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { showCall(c.n, true); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") showCall(c.n, true); });
      fresh.appendChild(tr);
    });
    body.parentNode.replaceChild(fresh, body);
    document.querySelectorAll("#calls th").forEach(function (th) {
      th.setAttribute("aria-sort", th.getAttribute("data-key") === state.sort ?
        (state.dir > 0 ? "ascending" : "descending") : "none");
    });
    document.getElementById("count").textContent = list.length + " of " + DATA.calls.length + " calls" +
      (pages > 1 ? ", page " + (state.page + 1) + " of " + pages : "");
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
  }
  document.getElementById("filter").addEventListener("input", function (e) {
    state.text = e.target.value.trim(); state.page = 0; drawTable();
  });
  select.addEventListener("change", function (e) { state.outcome = e.target.value; state.page = 0; drawTable(); });
  ["since", "until"].forEach(function (key) {
    document.getElementById(key).addEventListener("input", function (e) {
      var v = e.target.value.trim();
      var ok = v === "" || /^\d{1,2}(:\d{2}(:\d{2}(\.\d{1,3})?)?)?$/.test(v);
      e.target.setCustomValidity(ok ? "" : "a time of day: HH:MM or HH:MM:SS (UTC)");
      if (!ok) return;
      state[key] = v.length && v.indexOf(":") === 1 ? "0" + v : v;
      state.page = 0;
      drawTable();
    });
  });
  document.getElementById("prev").addEventListener("click", function () { state.page -= 1; drawTable(); });
  document.getElementById("next").addEventListener("click", function () { state.page += 1; drawTable(); });

  function csvCell(v) {
    v = v === null || v === undefined ? "" : String(v);
    if (/^[=+\-@\t\r]/.test(v) && !/^[-+]?\d+(\.\d+)?$/.test(v)) v = "'" + v;   // no spreadsheet formula
    return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  document.getElementById("csv").addEventListener("click", function () {
    var keys = ["n", "start", "from", "to", "outcome", "status", "pdd", "setup", "duration", "media", "mos",
                "anomalies", "call_id"];
    var lines = [keys.join(",")].concat(rows().map(function (c) {
      return keys.map(function (k) { return csvCell(k === "start" ? dateTime(c[k]) : c[k]); }).join(",");
    }));
    var link = h("a", {href: URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv"})),
                       download: "calls.csv"});
    document.body.appendChild(link);
    link.click();
    link.remove();
  });

  // ---- one call: its ladder, its messages, its media -------------------------------------------
  var LEFT = 170, GAP = 190, ROW = 30, SDP_ROW = 13, TOP = 50;
  function stamp(ts, prev, start) {
    if (state.timeMode === "abs") return clock(ts);
    var base = state.timeMode === "delta" && prev !== null ? prev : start;
    var v = ts - base;
    return (v >= 0 ? "+" : "") + v.toFixed(6);
  }
  function ladderRows(d) {
    var out = d.arrows.map(function (a) { return {arrow: a, ts: a[4]}; });
    d.spans.forEach(function (sp) {
      var at = out.findIndex(function (r) { return r.ts > sp[2]; });
      out.splice(at < 0 ? out.length : at, 0, {span: sp, ts: sp[2]});
    });
    return out;
  }
  function drawLadder(d) {
    var list = ladderRows(d);
    var longest = 0;
    d.arrows.forEach(function (a) { a[8].forEach(function (t) { longest = Math.max(longest, t.length); }); });
    var width = LEFT + GAP * d.lanes.length + Math.max(60, longest * 6.5 + 30);
    var height = TOP + 20 + list.reduce(function (sum, r) {
      return sum + ROW + (r.arrow ? SDP_ROW * Math.max(r.arrow[9].length, r.arrow[8].length - 1, 0) : 0);
    }, 0);
    var svg = s("svg", {"class": "ladder", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                        role: "img"});
    svg.appendChild(s("title", {}, d.title || "ladder"));
    var defs = s("defs");
    ["request", "1xx", "2xx", "error"].forEach(function (k) {
      var m = s("marker", {id: "ah-" + k, viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9",
                           markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse",
                           "class": "k-" + k});
      m.appendChild(s("path", {d: "M0,0 L10,5 L0,10 z"}));
      defs.appendChild(m);
    });
    svg.appendChild(defs);
    var x = function (lane) { return LEFT + GAP / 2 + lane * GAP; };
    d.lanes.forEach(function (name, i) {
      svg.appendChild(s("text", {x: x(i), y: 20, "text-anchor": "middle", "class": "lane-name"}, name));
      svg.appendChild(s("line", {x1: x(i), y1: 28, x2: x(i), y2: height - 5, "class": "lane"}));
    });
    var notesX = x(d.lanes.length - 1) + GAP / 2;
    var y = TOP, prev = null;
    list.forEach(function (r) {
      var mid = y + 12;
      if (r.span) {
        var sp = r.span, a1 = x(sp[0]), a2 = x(sp[1]) === a1 ? a1 + 60 : x(sp[1]);
        svg.appendChild(s("text", {x: 8, y: mid + 4, "class": "time"}, stamp(sp[2], prev, d.start) + "  #" + sp[6]));
        svg.appendChild(s("line", {x1: a1, y1: mid, x2: a2, y2: mid, "class": "media"}));
        svg.appendChild(s("text", {x: (a1 + a2) / 2, y: mid - 5, "text-anchor": "middle", "class": "media-label"},
                          sp[5].toUpperCase() + " " + sp[4]));
        y += ROW;
        return;
      }
      var a = r.arrow, k = a[3], x1 = x(a[0]), x2 = x(a[1]);
      var g = s("g", {"class": "arrow", "data-msg": a[7], "data-frame": a[5], tabindex: "0"});
      svg.appendChild(s("text", {x: 8, y: mid + 4, "class": "time"}, stamp(a[4], prev, d.start) + "  #" + a[5]));
      prev = a[4];
      if (x1 === x2) {
        g.appendChild(s("path", {d: "M" + x1 + "," + (mid - 6) + " h30 v12 h-30", fill: "none", "class": "shaft k-" + k,
                                 "marker-end": "url(#ah-" + k + ")",
                                 "stroke-dasharray": a[6] ? "5,4" : "none"}));
        g.appendChild(s("text", {x: x1 + 36, y: mid + 4, "class": "label k-" + k},
                        a[2] + (a[6] ? " (retransmission)" : "")));
      } else {
        g.appendChild(s("line", {x1: x1, y1: mid, x2: x2, y2: mid, "class": "shaft k-" + k,
                                 "marker-end": "url(#ah-" + k + ")", "stroke-width": "1.4",
                                 "stroke-dasharray": a[6] ? "5,4" : "none"}));
        g.appendChild(s("line", {x1: x1, y1: mid, x2: x2, y2: mid, "class": "hit"}));
        g.appendChild(s("text", {x: (x1 + x2) / 2, y: mid - 4, "text-anchor": "middle", "class": "label k-" + k},
                        a[2] + (a[6] ? " (retransmission)" : "")));
      }
      a[9].forEach(function (line, i) {
        g.appendChild(s("text", {x: (x1 + x2) / 2, y: mid + 13 + i * SDP_ROW, "text-anchor": "middle", "class": "sdp"},
                        line));
      });
      a[8].forEach(function (note, i) {
        svg.appendChild(s("text", {x: notesX, y: mid + 4 + i * SDP_ROW, "class": "note"}, "◆ " + note));
      });
      g.addEventListener("click", function () { showMessage(a[7], g); });
      g.addEventListener("keydown", function (e) { if (e.key === "Enter") showMessage(a[7], g); });
      svg.appendChild(g);
      y += ROW + SDP_ROW * Math.max(a[9].length, a[8].length - 1, 0);
    });
    return svg;
  }

  function messageCard(idx, pinned) {
    var m = DATA.messages[idx];
    var banner = h("div", {"class": "banner"}, [
      h("span", {}, ["frame" + (m.frames.indexOf(",") >= 0 ? "s " : " ") + m.frames + " · " + dateTime(m.ts) + " · " +
                     m.src + " → " + m.dst + " · " + m.transport + (m.retransmission ? " · retransmission" : "")])]);
    var button = h("button", {type: "button", "class": pinned ? "unpin" : "pin"}, [pinned ? "close" : "pin"]);
    banner.appendChild(button);
    var card = h("div", {"class": "msg", "data-msg": idx}, [banner, h("pre", {}, [m.text])]);
    button.addEventListener("click", function () {
      if (pinned) { card.remove(); return; }
      document.getElementById("pinned").appendChild(messageCard(idx, true));
    });
    return card;
  }
  function showMessage(idx, g) {
    if (idx < 0) return;
    document.querySelectorAll(".ladder .arrow.active").forEach(function (n) { n.classList.remove("active"); });
    if (g) g.classList.add("active");
    var pane = document.getElementById("message");
    while (pane.firstChild) pane.removeChild(pane.firstChild);
    pane.appendChild(messageCard(idx, false));
  }

  function table(headers, list) {
    var t = h("table", {}, [h("tr", {}, headers.map(function (x) { return h("th", {}, [x]); }))]);
    list.forEach(function (r) {
      t.appendChild(h("tr", {}, r.map(function (v) {
        return h("td", {}, [v === null || v === undefined ? "-" : String(v)]);
      })));
    });
    return t;
  }

  function showCall(n, scroll) {
    var row = DATA.calls.find(function (c) { return c.n === n; });
    if (!row) return;
    state.call = n;
    document.querySelectorAll("#calls tbody tr").forEach(function (tr) {
      tr.classList.toggle("selected", Number(tr.getAttribute("data-n")) === n);
    });
    var section = document.getElementById("call-detail");
    while (section.children.length > 1) section.removeChild(section.lastChild);
    var d = row.detail !== null ? DATA.details[row.detail] : null;
    section.appendChild(h("h3", {id: "call-title"}, [d ? d.title : "Call " + n + ": " + row.from + " -> " + row.to]));
    if (!d) {
      section.appendChild(h("p", {"class": "muted"}, ["This call's ladder is not in the page (only the first " +
        DATA.max_detail + " calls are). Run: sipflow report FILE --call " + n]));
      return;
    }
    if (d.facts.length) section.appendChild(h("p", {}, [d.facts.join(", ")]));
    var modes = h("div", {"class": "controls"}, ["Time: "]);
    [["rel", "since the first message"], ["abs", "wall clock (UTC)"], ["delta", "since the message before"]]
      .forEach(function (m) {
        var input = h("input", {type: "radio", name: "timemode", value: m[0], id: "time-" + m[0]});
        input.checked = state.timeMode === m[0];
        input.addEventListener("change", function () { state.timeMode = m[0]; redraw(); });
        modes.appendChild(h("label", {"for": "time-" + m[0]}, [input, " " + m[1]]));
      });
    section.appendChild(modes);
    var wrap = h("div", {"class": "ladder-wrap", id: "ladder"});
    section.appendChild(wrap);
    function redraw() {
      while (wrap.firstChild) wrap.removeChild(wrap.firstChild);
      wrap.appendChild(drawLadder(d));
    }
    redraw();
    section.appendChild(h("div", {"class": "panes"}, [h("div", {id: "message", "class": "panes"}),
                                                     h("div", {id: "pinned", "class": "panes"})]));
    if (d.events.length) {
      section.appendChild(h("h3", {}, ["Events"]));
      section.appendChild(table(["Time", "Frame", "Event"], d.events.map(function (e) {
        return [clock(e[0]), e[1], e[3]];
      })));
    }
    if (d.streams.length) {
      section.appendChild(h("h3", {}, ["RTP streams"]));
      section.appendChild(table(["From", "To", "SSRC", "Codec", "Packets", "Lost", "Loss %", "Jitter ms (mean/max)",
                                 "Max delta ms", "Late (adaptive JB)", "MOS", "R", "Ie,eff", "Ppl %", "Delay ms",
                                 "RTCP (pkts, loss %, jitter, RTT)", "Note"],
        d.streams.map(function (x) {
          return [x.from, x.to, x.ssrc, x.codec + (x.media ? " (" + x.media + ")" : ""), x.packets, x.lost, x.loss,
                  x.jitter_mean === null ? "-" : x.jitter_mean + " / " + x.jitter_max, x.max_delta, x.late_adaptive,
                  x.mos, x.r, x.ie_eff, x.ppl, x.delay,
                  x.rtcp ? [x.rtcp.packets, x.rtcp.fraction_lost, x.rtcp.jitter, x.rtcp.rtt].map(function (v) {
                    return v === null ? "-" : v; }).join(", ") : "-", x.note];
        })));
    }
    if (d.anomalies.length) {
      section.appendChild(h("h3", {}, ["Anomalies"]));
      section.appendChild(table(["Kind", "Frame", "Detail"], d.anomalies));
    }
    if (scroll) section.scrollIntoView();
    if (history.replaceState) history.replaceState(null, "", "#call-" + n);
  }

  drawTable();
  var wanted = /^#call-(\d+)$/.exec(location.hash);
  if (wanted) showCall(Number(wanted[1]), true);
  window.sipflowReport = {showCall: showCall, showMessage: showMessage};
})();
