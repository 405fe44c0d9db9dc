'use strict';
// The admin page: asks the admin API every few seconds with the token typed once (kept in
// this tab's sessionStorage, sent only in the Authorization header) and shows conversations
// with a person or on the way, and failed jobs. Everything is built with textContent: no
// HTML from the API is ever parsed. Paths are relative to the page's own (`/admin`), so a
// proxy that serves the service under a prefix serves the API calls under it too.
(function () {
  const TOKEN_KEY = 'messenger-handover.admin-token';
  const STATES = 'HUMAN,PASSING,RETURNING';
  const pollMs = Number(document.body.dataset.pollMs) || 3000;
  const byId = (id) => document.getElementById(id);
  let timer = null;
  let loading = false;

  class Refused extends Error {}

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // What the last action came to, shown until the next one.
  let notice = { text: '', isError: false };

  function say(text, isError) {
    const status = byId('status');
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function tell(text, isError) {
    notice = { text, isError: Boolean(isError) };
    say(text, isError);
  }

  function showLogin(message) {
    clearTimeout(timer);
    byId('board').hidden = true;
    byId('login').hidden = false;
    byId('login-error').textContent = message || '';
    byId('token').value = '';
    byId('token').focus();
  }

  async function api(method, path, body) {
    const secret = token();
    if (!secret) {
      throw new Refused('Enter the admin token.');
    }
    const headers = { Authorization: 'Bearer ' + secret, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let answer = null;
    try {
      answer = await resp.json();
    } catch (_) {
      answer = null;
    }
    const why = answer && typeof answer.error === 'string' ? answer.error : null;
    if (resp.status === 401 || resp.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new Refused(why || 'The token was refused.');
    }
    if (!resp.ok) {
      throw new Error(why || method + ' ' + path + ': HTTP ' + resp.status);
    }
    return answer;
  }

  function duration(secs) {
    if (secs === null || secs === undefined) {
      return '—';
    }
    const s = Math.max(0, Math.floor(secs));
    if (s < 60) {
      return s + ' s';
    }
    const m = Math.floor(s / 60);
    if (m < 60) {
      return m + ' min';
    }
    const h = Math.floor(m / 60);
    if (h < 48) {
      return h + ' h ' + (m % 60) + ' min';
    }
    return Math.floor(h / 24) + ' days';
  }

  function ago(at, now) {
    return at === null || at === undefined ? '—' : duration((now - at) / 1000) + ' ago';
  }

  function cell(row, text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function button(label, className, action) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.className = className;
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        tell(await action());
      } catch (e) {
        if (e instanceof Refused) {
          showLogin(e.message);
          return;
        }
        tell(e.message, true);
      }
      refresh();
    });
    return b;
  }

  function threadRow(t, now) {
    const row = document.createElement('tr');
    row.dataset.psid = t.psid;
    row.dataset.state = t.state;
    if (t.stuck) {
      row.classList.add('stuck');
    }
    cell(row, t.state, 'state state-' + t.state.toLowerCase());
    cell(row, t.psid, 'id');
    cell(row, duration(t.since_handover_secs));
    cell(row, duration(t.agent_idle_secs));
    cell(row, ago(t.last_user_msg_at, now));
    cell(row, t.owner || '—');
    const notes = t.stuck_reasons.slice();
    if (t.last_error) {
      notes.push(t.last_error);
    }
    if (t.owner_in_doubt) {
      notes.push('asking Meta who owns the thread');
    }
    cell(row, notes.join('; '), 'attention');
    const actions = cell(row, '', 'actions');
    if (t.state === 'HUMAN' || t.state === 'PASSING') {
      const path = 'admin/threads/' + encodeURIComponent(t.psid) + '/return?page=' +
        encodeURIComponent(t.page_id);
      actions.appendChild(button('Give back to bot', 'give-back', async () => {
        const answer = await api('POST', path);
        return answer.decision.cause;
      }));
    }
    return row;
  }

  function jobRow(j, now) {
    const row = document.createElement('tr');
    row.dataset.job = String(j.id);
    row.classList.add('stuck');
    cell(row, String(j.id), 'id');
    cell(row, j.kind);
    cell(row, j.psid || '—', 'id');
    cell(row, String(j.attempts));
    cell(row, ago(j.finished_at, now));
    cell(row, j.last_error || '', 'attention');
    const actions = cell(row, '', 'actions');
    actions.appendChild(button('Retry', 'retry', async () => {
      await api('POST', 'admin/jobs/' + j.id + '/retry');
      return 'Job ' + j.id + ' (' + j.kind + ') is queued again.';
    }));
    return row;
  }

  function show(threads, jobs) {
    const rows = threads.threads.map((t) => threadRow(t, threads.now));
    byId('threads').tBodies[0].replaceChildren(...rows);
    byId('threads-empty').hidden = rows.length > 0;
    const more = byId('threads-more');
    more.hidden = !threads.next_cursor;
    more.textContent = threads.next_cursor ? 'Only the first ' + rows.length + ' are shown.' : '';
    const jobRows = jobs.jobs.map((j) => jobRow(j, jobs.now));
    byId('jobs').tBodies[0].replaceChildren(...jobRows);
    byId('jobs-empty').hidden = jobRows.length > 0;
  }

  async function refresh() {
    clearTimeout(timer);
    if (loading) {
      return;
    }
    loading = true;
    try {
      const [threads, jobs] = await Promise.all([
        api('GET', 'admin/threads?state=' + STATES + '&limit=500'),
        api('GET', 'admin/jobs?status=failed&limit=100'),
      ]);
      byId('login').hidden = true;
      byId('board').hidden = false;
      show(threads, jobs);
      const updated = 'Updated ' + new Date().toLocaleTimeString() + '.';
      say(notice.text ? notice.text + ' · ' + updated : updated, notice.isError);
    } catch (e) {
      if (e instanceof Refused) {
        loading = false;
        showLogin(e.message);
        return;
      }
      say('Could not update: ' + e.message, true);
    }
    loading = false;
    timer = setTimeout(refresh, pollMs);
  }

  byId('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const typed = byId('token').value.trim();
    if (!typed) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, typed);
    byId('token').value = '';
    tell('');
    refresh();
  });
  byId('refresh').addEventListener('click', () => {
    tell('');
    refresh();
  });
  byId('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('');
  });

  if (token()) {
    refresh();
  } else {
    showLogin('');
  }
})();
