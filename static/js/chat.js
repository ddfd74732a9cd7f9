/**
 * @file The Chat screen: projects (list, create), the sessions of the selected project (list,
 * create, delete, state), and the open session's view.
 */

import { api, ApiError, listOf } from './api.js';
import { claudeStatus, onClaudeStatus } from './claude-status.js';
import { field, h, replace } from './dom.js';
import { formatTime } from './format.js';
import { SessionView, STATE_LABELS, sessionTitle } from './session-view.js';

/** Remembers the last project picked, across reloads. */
const PROJECT_KEY = 'sashad.project';

/** How long a Delete button waits for its confirming second press, in ms. */
const CONFIRM_MS = 4000;

/**
 * Renders the screen into `main`.
 *
 * @param {HTMLElement} main
 * @param {{navigate: (path: string) => void, sessionId?: string}} options
 * @returns {Promise<() => void>} cleanup, called when the page leaves this screen
 */
export async function renderChat(main, { navigate, sessionId }) {
  const projectList = h('ul', { class: 'item-list', 'aria-label': 'Projects' });
  const sessionList = h('ul', { class: 'item-list', 'aria-label': 'Sessions' });
  const sessionsTitle = h('h2', { id: 'sessions-title', text: 'Sessions' });
  const sidebarError = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const newSession = h('button', { type: 'button', class: 'primary', text: 'New session' });
  const projectInput = field('New project', {
    name: 'project', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none',
    placeholder: 'e.g. my-app', required: true,
  });
  const projectForm = h('form', { class: 'inline-form', 'aria-label': 'Create a project' },
    projectInput.field, h('button', { type: 'submit', text: 'Create' }));
  const connectNotice = h('div', { class: 'notice', hidden: true });
  const pane = h('div', { class: 'session-pane' });
  const sidebar = h('aside', { class: 'sidebar', 'aria-label': 'Projects and sessions' },
    h('section', { 'aria-labelledby': 'projects-title' },
      h('h2', { id: 'projects-title', text: 'Projects' }), projectList, projectForm),
    h('section', { 'aria-labelledby': 'sessions-title' },
      sessionsTitle, sessionList, h('div', { class: 'actions' }, newSession)),
    sidebarError);
  sidebar.id = 'chat-sidebar';
  // At phone width with a session open, the sidebar folds behind this button (CSS shows it).
  const toggle = h('button', {
    type: 'button', class: 'sidebar-toggle', 'aria-controls': 'chat-sidebar', 'aria-expanded': 'false',
    text: 'Projects and sessions',
  });
  const layout = h('div', { class: `chat${sessionId ? ' has-session' : ''}` }, toggle, sidebar,
    h('div', { class: 'chat-main' }, connectNotice, pane));
  toggle.addEventListener('click', () => {
    const open = layout.classList.toggle('show-sidebar');
    toggle.setAttribute('aria-expanded', String(open));
  });
  replace(main, layout);

  let projects = [];
  let sessions = [];
  let selected = null;
  /** @type {SessionView|null} */
  let view = null;

  const unsubscribe = onClaudeStatus((s) => {
    const ok = s?.authenticated;
    connectNotice.hidden = Boolean(ok);
    replace(connectNotice,
      s?.needsReauth ? 'Claude no longer accepts your credential. ' : 'Connect your Claude credential to start chatting. ',
      h('a', { href: '/connect', 'data-route': '', text: 'Connect Claude' }));
  });

  function showError(e) {
    replace(sidebarError, h('span', { text: e.message }),
      e instanceof ApiError ? [' ', h('code', { class: 'error-code', text: e.code })] : null,
      e instanceof ApiError && e.code === 'no_credentials'
        ? [' ', h('a', { href: '/connect', 'data-route': '', text: 'Connect Claude' })] : null);
    sidebarError.hidden = false;
  }

  function projectId(p) {
    return typeof p === 'string' ? p : String(p?.id ?? '');
  }

  function paintProjects() {
    replace(projectList, projects.length === 0
      ? h('li', { class: 'empty', text: 'No projects yet. Create one below.' })
      : projects.map((p) => {
        const id = projectId(p);
        return h('li', {},
          h('button', {
            type: 'button', class: 'item', 'aria-pressed': String(id === selected), dataset: { project: id },
            text: id, on: { click: () => selectProject(id) },
          }));
      }));
  }

  function paintSessions() {
    sessionsTitle.textContent = selected ? `Sessions in ${selected}` : 'Sessions';
    newSession.disabled = !selected;
    const mine = sessions.filter((s) => s.project === selected)
      .sort((a, b) => timeValue(b.createdAt) - timeValue(a.createdAt));
    replace(sessionList, !selected
      ? h('li', { class: 'empty', text: 'Pick or create a project first.' })
      : mine.length === 0
        ? h('li', { class: 'empty', text: 'No sessions in this project yet.' })
        : mine.map((s) => sessionItem(s)));
  }

  function sessionItem(s) {
    const current = s.id === sessionId;
    const label = `Delete ${sessionTitle(s)}`;
    const del = h('button', { type: 'button', class: 'small danger-text', text: 'Delete', 'aria-label': label });
    let armed = null;
    del.addEventListener('click', async () => {
      if (!armed) {
        del.textContent = 'Confirm delete';
        del.setAttribute('aria-label', `Confirm: ${label.toLowerCase()}`);
        armed = setTimeout(() => {
          armed = null;
          del.textContent = 'Delete';
          del.setAttribute('aria-label', label);
        }, CONFIRM_MS);
        return;
      }
      clearTimeout(armed);
      del.disabled = true;
      try {
        await api('DELETE', `/api/sessions/${encodeURIComponent(s.id)}`);
        sessions = sessions.filter((x) => x.id !== s.id);
        if (current) navigate('/');
        else paintSessions();
      } catch (e) {
        del.disabled = false;
        showError(e);
      }
    });
    return h('li', { class: `session-item${current ? ' current' : ''}`, dataset: { sessionId: s.id } },
      h('a', { href: `/s/${encodeURIComponent(s.id)}`, 'data-route': '', 'aria-current': current ? 'page' : null },
        h('span', { class: 'item-title', text: sessionTitle(s) }),
        h('span', { class: 'item-meta', text: formatTime(s.createdAt) })),
      h('span', { class: 'badge state-badge', dataset: { state: s.state ?? '' }, text: STATE_LABELS[s.state] ?? s.state ?? '' }),
      del);
  }

  function selectProject(id) {
    selected = id;
    localStorage.setItem(PROJECT_KEY, id);
    paintProjects();
    paintSessions();
  }

  projectForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    sidebarError.hidden = true;
    const id = projectInput.input.value.trim();
    if (!id) return;
    try {
      const created = await api('POST', '/api/projects', { id });
      projectInput.input.value = '';
      const createdId = projectId(created) || id;
      if (!projects.some((p) => projectId(p) === createdId)) projects.push(created ?? { id: createdId });
      selectProject(createdId);
    } catch (err) {
      showError(err);
      projectInput.input.focus();
    }
  });

  newSession.addEventListener('click', async () => {
    if (!selected) return;
    sidebarError.hidden = true;
    newSession.disabled = true;
    try {
      const session = await api('POST', '/api/sessions', { project: selected });
      navigate(`/s/${encodeURIComponent(session.id)}`);
    } catch (e) {
      showError(e);
      newSession.disabled = false;
    }
  });

  try {
    const [p, s] = await Promise.all([api('GET', '/api/projects'), api('GET', '/api/sessions')]);
    projects = listOf(p, 'projects');
    sessions = listOf(s, 'sessions');
  } catch (e) {
    showError(e);
  }

  let open = null;
  if (sessionId) {
    open = sessions.find((s) => s.id === sessionId) ?? null;
    try {
      // Fresh state and lastSeq, even when the list had it.
      open = await api('GET', `/api/sessions/${encodeURIComponent(sessionId)}`);
    } catch (e) {
      open = null;
      replace(pane, h('div', { class: 'placeholder' },
        h('p', { role: 'alert', text: e.status === 404 ? 'This session does not exist (any more).' : e.message }),
        h('a', { href: '/', 'data-route': '', text: 'Back to your sessions' })));
    }
  }
  const remembered = localStorage.getItem(PROJECT_KEY);
  selected = open?.project
    ?? (projects.some((p) => projectId(p) === remembered) ? remembered : projectId(projects[0]) || null);
  paintProjects();
  paintSessions();

  if (open) {
    view = new SessionView(open, {
      onState: (state) => {
        const s = sessions.find((x) => x.id === open.id);
        if (s) s.state = state;
        const badge = sessionList.querySelector(`[data-session-id="${CSS.escape(open.id)}"] .state-badge`);
        if (badge) {
          badge.textContent = STATE_LABELS[state] ?? state;
          badge.dataset.state = state;
        }
      },
      onGone: () => {
        sessions = sessions.filter((x) => x.id !== open.id);
        paintSessions();
      },
    });
    replace(pane, view.el);
    view.mount();
    view.input.focus();
  } else if (!sessionId) {
    replace(pane, h('div', { class: 'placeholder' },
      h('h2', { text: 'No session open' }),
      h('p', { text: projects.length === 0
        ? 'Create a project, then start a session in it to chat with Claude.'
        : 'Pick a session on the left, or start a new one.' })));
  }
  if (!claudeStatus()) connectNotice.hidden = true;

  return () => {
    unsubscribe();
    view?.destroy();
  };
}

/** A timestamp (seconds, milliseconds or RFC 3339) as a number that sorts. */
function timeValue(t) {
  if (typeof t === 'number') return t < 1e12 ? t * 1000 : t;
  const parsed = Date.parse(t ?? '');
  return Number.isNaN(parsed) ? 0 : parsed;
}
