// Sparkwing dashboard: swaps in the HTML the server streams, appends log lines, ticks durations,
// and searches the log. Plain JavaScript, no build step.
(function () {
  'use strict';

  function fmtDur(ms) {
    ms = Math.max(0, ms);
    if (ms < 1000) return ms + 'ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    var s = Math.floor((ms % 60000) / 1000);
    return Math.floor(ms / 60000) + 'm' + (s < 10 ? '0' : '') + s + 's';
  }

  function localize(root) {
    root.querySelectorAll('time[data-ts]').forEach(function (t) {
      var d = new Date(Number(t.dataset.ts));
      t.title = d.toISOString();
      t.textContent = d.toLocaleString();
    });
  }

  function tick() {
    document.querySelectorAll('.dur.live').forEach(function (e) {
      e.textContent = fmtDur(Date.now() - Number(e.dataset.start));
    });
  }

  var liveEl = document.getElementById('live');
  function setLive(text, cls) {
    if (!liveEl) return;
    liveEl.textContent = text;
    liveEl.className = 'conn ' + (cls || '');
  }

  localize(document);
  setInterval(tick, 1000);

  // Filters apply on change (the button is there for when scripts are off).
  var filters = document.getElementById('filters');
  if (filters) {
    filters.querySelectorAll('select').forEach(function (s) {
      s.addEventListener('change', function () { filters.submit(); });
    });
    filters.querySelectorAll('.js-hide').forEach(function (b) { b.hidden = true; });
  }

  // Runs list: the server re-sends the list whenever it changes.
  var list = document.getElementById('runs-list');
  if (list && list.dataset.live === 'true') {
    var les = new EventSource(list.dataset.stream);
    les.addEventListener('list', function (e) {
      list.innerHTML = JSON.parse(e.data).html;
      localize(list);
      setLive('● live', 'on');
    });
    les.onopen = function () { setLive('● live', 'on'); };
    les.onerror = function () { setLive('reconnecting…', 'off'); };
  }

  // Run page: sections, then the selected job's log.
  var run = document.getElementById('run');
  if (!run) return;
  var log = document.getElementById('log');
  var logStatus = document.getElementById('log-status');
  var search = document.getElementById('log-search');
  var matches = document.getElementById('log-matches');
  var follow = document.getElementById('log-follow');
  var query = '';

  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  // Show only the lines that contain the query (case-insensitive), with the matches marked.
  function applySearch(div) {
    var t = div.lastChild;
    var raw = div._raw;
    if (!query) {
      if (div._marked) { t.textContent = raw; div._marked = false; }
      div.classList.remove('hidden');
      return false;
    }
    var lower = raw.toLowerCase();
    if (lower.indexOf(query) < 0) {
      div.classList.add('hidden');
      return false;
    }
    var out = '', i = 0, j;
    while ((j = lower.indexOf(query, i)) >= 0) {
      out += escapeHtml(raw.slice(i, j)) + '<mark>' + escapeHtml(raw.slice(j, j + query.length)) + '</mark>';
      i = j + query.length;
    }
    t.innerHTML = out + escapeHtml(raw.slice(i));
    div._marked = true;
    div.classList.remove('hidden');
    return true;
  }

  function countMatches() {
    if (!matches) return;
    if (!query) { matches.textContent = ''; return; }
    var n = log.querySelectorAll('.line:not(.hidden)').length;
    matches.textContent = n + (n === 1 ? ' line matches' : ' lines match');
  }

  var lineCount = 0;
  function appendLines(recs) {
    var frag = document.createDocumentFragment();
    recs.forEach(function (r) {
      var div = document.createElement('div');
      div.className = 'line' + (r.stream === 'stderr' ? ' err' : '');
      div.dataset.seq = r.seq;
      div.title = new Date(r.ts).toLocaleTimeString() + (r.attempt > 1 ? ' · attempt ' + r.attempt : '') + ' · ' + r.stream;
      var n = document.createElement('span');
      n.className = 'ln';
      n.textContent = r.seq;
      var t = document.createElement('span');
      t.className = 'lt';
      t.textContent = r.line;
      div._raw = r.line;
      div.append(n, t);
      applySearch(div);
      frag.append(div);
    });
    log.append(frag);
    lineCount += recs.length;
    if (follow && follow.checked) log.scrollTop = log.scrollHeight;
    if (logStatus) logStatus.textContent = lineCount + (lineCount === 1 ? ' line' : ' lines') + ', following…';
    countMatches();
  }

  if (search) {
    var timer = null;
    search.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        query = search.value.trim().toLowerCase();
        log.querySelectorAll('.line').forEach(applySearch);
        countMatches();
      }, 80);
    });
  }
  if (log && follow) {
    log.addEventListener('scroll', function () {
      follow.checked = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
    });
  }

  // Approval gates: Approve/Reject post the decision; the stream then shows it. (The cluster
  // page's buttons submit their own form, which has no data-gate-url.)
  run.addEventListener('click', function (e) {
    var btn = e.target.closest('[data-gate-decision]');
    if (!btn) return;
    var form = btn.closest('[data-gate-url]');
    if (!form) return;
    var comment = form.querySelector('.gate-comment');
    var result = form.querySelector('.gate-result');
    form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    fetch(form.dataset.gateUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ decision: btn.dataset.gateDecision, comment: comment && comment.value ? comment.value : null })
    }).then(function (r) {
      return r.json().then(function (d) {
        if (!r.ok) throw new Error(d.error || ('HTTP ' + r.status));
        result.textContent = d.decision === 'approve' ? 'Approved.' : 'Rejected.';
      });
    }).catch(function (err) {
      result.textContent = err.message;
      form.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
    });
  });

  var es = new EventSource(run.dataset.stream);
  es.addEventListener('view', function (e) {
    var d = JSON.parse(e.data);
    Object.keys(d.sections).forEach(function (k) {
      run.querySelectorAll('[data-section="' + k + '"]').forEach(function (el) {
        el.innerHTML = d.sections[k];
        localize(el);
      });
    });
    document.title = d.title + ' · Sparkwing';
    run.dataset.terminal = d.terminal;
    run.dataset.status = d.status;
  });
  es.addEventListener('logs', function (e) {
    if (log) appendLines(JSON.parse(e.data));
  });
  es.addEventListener('log-end', function (e) {
    var d = JSON.parse(e.data);
    var word = d.state === 'success' ? 'passed' : d.state;
    if (logStatus) {
      logStatus.textContent = (lineCount ? lineCount + (lineCount === 1 ? ' line' : ' lines') + '. ' : 'No output. ') +
        'The job ' + word + (d.reason ? ' (' + d.reason + ')' : '') + '.';
    }
    if (log) log.dataset.ended = 'true';
  });
  es.addEventListener('done', function () {
    es.close();
    setLive('run finished', 'done');
  });
  es.addEventListener('problem', function (e) { setLive('error: ' + e.data, 'off'); });
  es.onopen = function () { setLive('● live', 'on'); };
  es.onerror = function () { if (es.readyState !== 2) setLive('reconnecting…', 'off'); };
})();
