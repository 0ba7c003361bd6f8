/* Agent trace view: builds the page from the plugin's JSON.
 *
 * Every string that comes from a trace (model output, code, observations,
 * errors) is untrusted: it only ever reaches the page as a DOM text node
 * (textContent / createTextNode). This file never parses HTML.
 */
(function () {
  "use strict";

  var body = document.body;
  var app = document.getElementById("app");
  var view = body.getAttribute("data-view");
  var jsonUrl = new URL(body.getAttribute("data-json"), window.location.href).toString();
  var heading = body.getAttribute("data-heading") || "";

  var COLLAPSE_LINES = 24;
  var COLLAPSE_CHARS = 3000;
  var CODE_LINES = 60;
  var POLL_MS = 5000;

  var STATUS = {
    final_answer: ["Final answer", "ok"],
    max_steps: ["Max steps reached", "warn"],
    budget_exceeded: ["Budget exceeded", "budget"],
    timeout: ["Timed out", "timeout"],
    error: ["Error", "bad"],
    running: ["Running", "running"],
    stopped: ["Stopped mid-run (killed)", "stopped"]
  };

  // -- DOM helpers (text only) ------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) { continue; }
      parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }

  function clear(node) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
  }

  function pill(status, liveness) {
    var key = status === "running" && liveness === "stopped" ? "stopped" : status;
    var spec = STATUS[key] || [String(status || "unknown"), "unknown"];
    var node = el("span", "pill pill-" + spec[1], spec[0]);
    node.setAttribute("data-status", key || "unknown");
    return node;
  }

  function badge(text, kind) {
    return el("span", "badge badge-" + kind, text);
  }

  // -- formatting -------------------------------------------------------------

  function num(value) {
    if (value === null || value === undefined) { return "\u2014"; }
    return Number(value).toLocaleString("en-US");
  }

  function cost(value) {
    if (value === null || value === undefined) { return "unknown"; }
    if (value === 0) { return "$0"; }
    return "$" + (value >= 0.01 ? value.toFixed(4) : value.toFixed(6));
  }

  function seconds(value) {
    if (value === null || value === undefined) { return "\u2014"; }
    if (value < 0.001) { return "<1 ms"; }
    if (value < 1) { return Math.round(value * 1000) + " ms"; }
    if (value < 60) { return value.toFixed(1) + " s"; }
    var minutes = Math.floor(value / 60);
    return minutes + " min " + Math.round(value - minutes * 60) + " s";
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function jsonText(value) {
    if (typeof value === "string") { return value; }
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  // -- collapsible text -------------------------------------------------------

  /* A <pre> of untrusted text; long text shows its head and a "show all" button. */
  function textBlock(text, className) {
    var wrap = el("div", "block");
    var pre = el("pre", className || "out");
    wrap.appendChild(pre);
    text = text === null || text === undefined ? "" : String(text);
    var lines = text.split("\n");
    var long = lines.length > COLLAPSE_LINES || text.length > COLLAPSE_CHARS;
    if (!long) {
      pre.textContent = text;
      return wrap;
    }
    var head = lines.slice(0, COLLAPSE_LINES).join("\n");
    if (head.length > COLLAPSE_CHARS) { head = head.slice(0, COLLAPSE_CHARS); }
    var button = el("button", "show-all");
    button.type = "button";
    var expanded = false;
    function paint() {
      pre.textContent = expanded ? text : head + "\n\u2026";
      button.textContent = expanded ? "show less" :
        "show all (" + plural(lines.length, "line") + ", " + num(text.length) + " characters)";
      button.setAttribute("aria-expanded", expanded ? "true" : "false");
    }
    button.addEventListener("click", function () { expanded = !expanded; paint(); });
    paint();
    wrap.appendChild(button);
    return wrap;
  }

  /* Code with line numbers; ``lines`` are [[cssClass, text], ...] from the server's highlighter. */
  function codeBlock(code, lines) {
    var wrap = el("div", "block");
    var table = el("div", "code");
    table.setAttribute("role", "figure");
    table.setAttribute("aria-label", "code");
    if (!lines) {
      lines = String(code).split("\n").map(function (line) { return [["", line]]; });
    }
    var rows = [];
    lines.forEach(function (segments, i) {
      var row = el("div", "line");
      row.appendChild(el("span", "ln", i + 1));
      var src = el("span", "src");
      segments.forEach(function (segment) {
        var cls = String(segment[0] || "");
        var text = String(segment[1] || "");
        src.appendChild(/^tok-[a-z]+$/.test(cls) ? el("span", cls, text) : document.createTextNode(text));
      });
      if (!segments.length) { src.appendChild(document.createTextNode("\n")); }
      row.appendChild(src);
      rows.push(row);
      table.appendChild(row);
    });
    wrap.appendChild(table);
    if (rows.length > CODE_LINES) {
      var button = el("button", "show-all");
      button.type = "button";
      var expanded = false;
      var paint = function () {
        rows.forEach(function (row, i) { row.hidden = !expanded && i >= CODE_LINES; });
        button.textContent = expanded ? "show less" : "show all (" + plural(rows.length, "line") + ")";
        button.setAttribute("aria-expanded", expanded ? "true" : "false");
      };
      button.addEventListener("click", function () { expanded = !expanded; paint(); });
      paint();
      wrap.appendChild(button);
    }
    return wrap;
  }

  function section(label, content, className) {
    var node = el("div", "section" + (className ? " " + className : ""));
    add(node, el("div", "label", label), content);
    return node;
  }

  // -- fetching ---------------------------------------------------------------

  /* The API server authenticates the UI by cookie (Airflow 3.2+) or by a bearer
     token the UI keeps in localStorage (Airflow 3.1); try the token first if there is one. */
  function storedToken() {
    try { return window.localStorage.getItem("token"); } catch (e) { return null; }
  }

  function getJSON(url) {
    var token = storedToken();
    var plain = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (!token) { return fetch(url, plain); }
    var withToken = { credentials: "same-origin",
                      headers: { Accept: "application/json", Authorization: "Bearer " + token } };
    return fetch(url, withToken).then(function (response) {
      return response.status === 401 || response.status === 403 ? fetch(url, plain) : response;
    });
  }

  function explain(title, message, kind) {
    clear(app);
    var box = el("div", "explain explain-" + (kind || "info"));
    add(box, el("h1", null, title), el("p", null, message));
    app.appendChild(box);
  }

  function failure(response) {
    return response.json().catch(function () { return {}; }).then(function (data) {
      var detail = data && data.detail;
      if (response.status === 401) {
        explain("Not logged in", "Log in to Airflow, then reload this page.", "warn");
      } else if (response.status === 403) {
        explain("Not allowed", "Your Airflow user may not read this DAG's XComs, so its agent traces " +
                "are hidden.", "warn");
      } else if (response.status === 404 && detail && typeof detail === "object") {
        explain(view === "run" ? "No run" : "No agent trace", detail.message, "info");
        return detail.reason === "not_started" || detail.reason === "no_step_yet";
      } else {
        explain("The trace could not be loaded", "The server answered HTTP " + response.status + ".", "bad");
      }
      return false;
    });
  }

  var lastSignature = null;

  function load() {
    getJSON(jsonUrl).then(function (response) {
      if (!response.ok) { return failure(response); }
      return response.json().then(function (data) {
        return view === "run" ? showRun(data) : showTrace(data);
      });
    }).then(function (poll) {
      if (poll) { window.setTimeout(load, POLL_MS); }
    }).catch(function (error) {
      explain("The trace could not be loaded", String(error), "bad");
    });
  }

  // -- the task view ----------------------------------------------------------

  function stat(label, value, title, className) {
    var node = el("div", "stat" + (className ? " " + className : ""));
    add(node, el("div", "stat-label", label), el("div", "stat-value", value));
    if (title) { node.title = title; }
    return node;
  }

  /* Which sandbox ran the code; a guard the worker could not set up (a value "not ...") is named and
     flagged, and the tooltip lists every guard, so a reviewer sees how confined the run really was. */
  function sandboxStat(trace) {
    var name = (trace.limits || {}).sandbox;
    if (!name) { return null; }
    var confinement = trace.confinement || {};
    var guards = Object.keys(confinement);
    var missing = guards.filter(function (g) { return String(confinement[g]).indexOf("not ") === 0; });
    var title = guards.length
      ? guards.map(function (g) { return g + ": " + confinement[g]; }).join("\n")
      : "no step had run code when this trace was written";
    return stat("Sandbox", name + (missing.length ? " \u00b7 without " + missing.join(", ") : ""), title,
                missing.length ? "stat-warn" : null);
  }

  /* A run that has not ended has no duration yet: show the time up to its latest step. */
  function totalTime(trace) {
    if (trace.duration_s !== null && trace.duration_s !== undefined) { return seconds(trace.duration_s); }
    var steps = trace.steps || [];
    var last = steps.length ? steps[steps.length - 1].ended_at : null;
    var elapsed = last ? (Date.parse(last) - Date.parse(trace.started_at)) / 1000 : NaN;
    return isFinite(elapsed) && elapsed >= 0 ? "at least " + seconds(elapsed) : "\u2014";
  }

  function showTrace(data) {
    var trace = data.trace;
    var steps = trace.steps || [];
    var last = steps.length ? steps[steps.length - 1] : {};
    var signature = [trace.status, data.liveness, steps.length, last.ended_at, trace.ended_at].join("|");
    if (signature !== lastSignature) {
      lastSignature = signature;
      renderTrace(data);
    }
    return data.liveness === "running";
  }

  function renderTrace(data) {
    var trace = data.trace;
    var totals = trace.totals || {};
    var limits = trace.limits || {};
    var steps = trace.steps || [];
    clear(app);

    var header = el("header", "run-header");
    var title = el("div", "title-row");
    var name = data.map_index >= 0 ? data.task_id + " [" + data.map_index + "]" : data.task_id;
    add(title, pill(trace.status, data.liveness), el("h1", null, "Agent trace \u00b7 " + name));
    var ti = data.task_instance || {};
    title.appendChild(el("span", "ti-state", "task " + (ti.state || "not started") +
                         (ti.try_number ? " \u00b7 try " + ti.try_number : "")));
    var back = el("a", "back", "all agent tasks of this run");
    back.href = "../../agents";
    title.appendChild(back);
    header.appendChild(title);

    if (data.notice) {
      header.appendChild(el("p", "notice notice-" + data.liveness, data.notice));
    }

    var grid = el("div", "stats");
    var cap = limits.max_steps;
    add(grid,
      stat("Model", trace.model || "\u2014", null, "stat-wide"),
      stat("Steps", num(totals.steps !== undefined ? totals.steps : steps.length) +
           (cap ? " of " + num(cap) : "")),
      stat("LLM calls", num(totals.llm_calls)),
      stat("Input tokens", num(totals.input_tokens)),
      stat("Output tokens", num(totals.output_tokens)),
      stat("Cost", cost(totals.cost_usd), totals.cost_usd === null ? "the model has no price on record" : null),
      stat("Total time", totalTime(trace)),
      stat("Retries", num(totals.retries)),
      sandboxStat(trace));
    header.appendChild(grid);

    var answer = el("div", "answer");
    if (trace.answer_source) {
      var answerLabel = "Final answer" + (trace.answer_source === "fallback" ? " (from the final-answer fallback step)" : "");
      add(answer, section(answerLabel, textBlock(jsonText(trace.answer), "out answer-text")));
    } else {
      add(answer, section("Final answer", el("p", "muted", data.liveness === "running"
        ? "none yet" : "none: the agent did not give a final answer")));
    }
    if (trace.error) {
      add(answer, section("Why the run stopped", textBlock(trace.error, "out err-text"), "run-error"));
    }
    header.appendChild(answer);

    var task = el("details", "task-prompt");
    add(task, el("summary", null, "Task given to the agent"), textBlock(trace.task, "out"));
    header.appendChild(task);
    app.appendChild(header);

    var compactions = {};
    (trace.compactions || []).forEach(function (c) {
      (compactions[c.before_step] = compactions[c.before_step] || []).push(c);
    });

    var list = el("div", "steps");
    if (!steps.length) {
      list.appendChild(el("p", "muted", "No step has finished yet."));
    }
    steps.forEach(function (step, i) {
      (compactions[step.index] || []).forEach(function (c) { list.appendChild(compactionNote(c)); });
      list.appendChild(stepCard(step, (data.code_lines || [])[i], trace));
      if (trace.steps_omitted && i === 0) {
        list.appendChild(el("p", "notice notice-warn",
          plural(trace.steps_omitted, "step") + " from the middle of the run were left out to keep the trace " +
          "under its size cap."));
      }
    });
    if (data.liveness === "running") {
      list.appendChild(el("p", "notice notice-running", "Step " + (steps.length + 1) + " is in progress\u2026"));
    }
    app.appendChild(list);
    document.title = "Agent trace: " + name;
  }

  function compactionNote(c) {
    var node = el("details", "compaction");
    var range = c.steps && c.steps.length === 2 ? "steps " + c.steps[0] + "\u2013" + c.steps[1] : "earlier steps";
    add(node, el("summary", null, "Memory compacted before step " + c.before_step + ": " + range +
                 " summarised (" + c.method + "), prompt " + num(c.prompt_tokens_before) + " \u2192 " +
                 num(c.prompt_tokens_after) + " tokens"),
        textBlock(c.summary, "out"));
    return node;
  }

  function stepCard(step, codeLines, trace) {
    var error = step.error;
    var parseError = error && error.type === "ParseError";
    var fallback = step.kind === "final_answer_fallback";
    var card = el("section", "step" + (error ? " step-error" : "") + (fallback ? " step-fallback" : ""));
    card.id = "step-" + step.index;
    card.setAttribute("data-step", String(step.index));

    var head = el("div", "step-head");
    add(head, el("h2", null, "Step " + step.index));
    if (fallback) { head.appendChild(badge("Final-answer fallback", "fallback")); }
    if (parseError) {
      head.appendChild(badge("Parse error", "error"));
    } else if (error) {
      head.appendChild(badge("Error: " + error.type, "error"));
    }
    if (step.final_answer_called) { head.appendChild(badge("final_answer", "ok")); }
    var meta = el("span", "step-meta");
    var parts = [num(step.input_tokens) + " in / " + num(step.output_tokens) + " out tokens",
                 "cost " + cost(step.cost_usd), "model " + seconds(step.llm_latency_s)];
    if (step.execution_s !== null && step.execution_s !== undefined) { parts.push("code " + seconds(step.execution_s)); }
    if (step.retries && step.retries.length) {
      parts.push(step.retries.length === 1 ? "1 retry" : step.retries.length + " retries");
    }
    if (step.rejected_outputs && step.rejected_outputs.length) {
      parts.push(step.rejected_outputs.length + " re-asked");
    }
    meta.textContent = parts.join(" \u00b7 ");
    head.appendChild(meta);
    card.appendChild(head);

    if (fallback) {
      card.appendChild(el("p", "muted", "The run hit its cap without a final answer, so the model was " +
                          "asked once more for one."));
    }
    var rejected = step.rejected_outputs || [];
    if (rejected.length) {
      var notRun = el("div", "rejected");
      add(notRun, el("p", "muted", "The model was asked again within this step: " +
                     (rejected.length === 1 ? "this reply" : "these replies") + " could not be read, or " +
                     "repeated the action that had just failed. Nothing in " +
                     (rejected.length === 1 ? "it" : "them") + " was run."));
      rejected.forEach(function (text) { notRun.appendChild(textBlock(text, "out rejected-text")); });
      card.appendChild(section("Replies not run (" + rejected.length + ")", notRun, "section-rejected"));
    }
    var replyOnly = typeof step.code !== "string" && step.model_output && step.thought &&
      step.model_output.trim() === step.thought.trim();
    if (step.thought && !replyOnly) { card.appendChild(section("Thought", textBlock(step.thought, "out thought"))); }
    if (typeof step.code === "string") {
      card.appendChild(section("Code", codeBlock(step.code, codeLines)));
      var notes = step.notes || [];
      if (notes.length) {
        var noteList = el("div", "notes");
        notes.forEach(function (note) { noteList.appendChild(el("p", "muted", note)); });
        card.appendChild(section("Changed before running (the model was told)", noteList, "section-notes"));
      }
    } else if (step.model_output) {
      card.appendChild(section(parseError ? "Model reply (no code could be read from it)" : "Model reply",
                               textBlock(step.model_output, "out")));
    }
    var observed = false;
    if (step.stdout) { card.appendChild(section("Output", textBlock(step.stdout, "out stdout"))); observed = true; }
    if (step.value !== null && step.value !== undefined) {
      card.appendChild(section("Value", textBlock(step.value, "out value"))); observed = true;
    }
    if (step.final_answer_called) {
      card.appendChild(section("final_answer(\u2026)", textBlock(jsonText(step.final_answer), "out answer-text")));
      observed = true;
    }
    if (error) {
      var errorBox = el("div", "error-box");
      add(errorBox, el("div", "error-title", (parseError ? "Parse error: " : error.type + ": ") + error.message));
      if (error.traceback) { errorBox.appendChild(textBlock(error.traceback, "out traceback")); }
      card.appendChild(section("Error", errorBox, "section-error"));
      observed = true;
    }
    if (!observed && typeof step.code === "string") {
      card.appendChild(section("Output", el("p", "muted", "(nothing printed, no value)")));
    }
    if (step.tool_calls && step.tool_calls.length) { card.appendChild(section("Tool calls", toolTable(step.tool_calls))); }
    if (step.retries && step.retries.length) { card.appendChild(section("Model call retries", retryTable(step.retries))); }
    return card;
  }

  function table(headers, rows) {
    var node = el("table", "grid");
    var thead = el("thead");
    var tr = el("tr");
    headers.forEach(function (h) { tr.appendChild(el("th", null, h)); });
    thead.appendChild(tr);
    node.appendChild(thead);
    var tbody = el("tbody");
    rows.forEach(function (cells) {
      var row = el("tr");
      cells.forEach(function (cell) {
        var td = el("td");
        add(td, cell instanceof Node ? cell : String(cell));
        row.appendChild(td);
      });
      tbody.appendChild(row);
    });
    node.appendChild(tbody);
    return node;
  }

  function toolTable(calls) {
    return table(["Tool", "Arguments", "Time", "Result size", "Error"], calls.map(function (c) {
      return [el("code", null, c.name), el("code", "args", c.arguments), seconds(c.duration_s),
              c.result_chars === null || c.result_chars === undefined ? "\u2014" : num(c.result_chars) + " chars",
              c.error ? el("span", "err-inline", c.error) : "\u2014"];
    }));
  }

  function retryTable(retries) {
    return table(["Attempt", "Error", "HTTP status", "Waited", "Message"], retries.map(function (r) {
      return [String(r.attempt), r.error_type, r.status_code === null ? "\u2014" : String(r.status_code),
              seconds(r.waited_s), r.message];
    }));
  }

  // -- the DAG-run view -------------------------------------------------------

  function showRun(data) {
    var signature = JSON.stringify(data.agents);
    if (signature !== lastSignature) {
      lastSignature = signature;
      renderRun(data);
    }
    return data.agents.some(function (a) { return a.liveness === "running" || a.state === "running" ||
                                                   a.state === "queued" || a.state === "scheduled"; });
  }

  function renderRun(data) {
    clear(app);
    var header = el("header", "run-header");
    add(header, el("h1", null, "Agent tasks \u00b7 " + heading));
    app.appendChild(header);
    if (!data.agents.length) {
      app.appendChild(el("p", "explain explain-info", "This DAG run has no agent tasks."));
      return;
    }
    var rows = data.agents.map(function (a) {
      var link = el("a", null, "open trace");
      link.href = "tasks/" + encodeURIComponent(a.task_id) + "/trace?map_index=" + encodeURIComponent(a.map_index);
      var status = a.has_trace ? pill(a.status, a.liveness)
        : el("span", "muted", "no trace (" + (a.state || "not started") + ")");
      var mapIndex = a.map_index < 0 ? "\u2014" : String(a.map_index) +
        (a.rendered_map_index && a.rendered_map_index !== String(a.map_index) ? " (" + a.rendered_map_index + ")" : "");
      return [el("code", null, a.task_id), mapIndex, status,
              a.has_trace ? num(a.steps) + (a.max_steps ? " of " + num(a.max_steps) : "") : "\u2014",
              a.has_trace ? num(a.input_tokens) + " in / " + num(a.output_tokens) + " out" : "\u2014",
              a.has_trace ? cost(a.cost_usd) : "\u2014",
              a.has_trace ? (a.duration_s === null && a.liveness === "running" ? "running" : seconds(a.duration_s)) : "\u2014",
              link];
    });
    var t = table(["Task", "Map index", "Status", "Steps", "Tokens", "Cost", "Time", ""], rows);
    t.className = "grid runs";
    app.appendChild(t);
  }

  load();
})();
