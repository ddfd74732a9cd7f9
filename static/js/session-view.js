/**
 * @file One open session: its state, the conversation, and the composer (Send, Stop).
 *
 * Messages go out through the REST API (`POST /api/sessions/{id}/messages`), whose answer says
 * at once whether the server took them; they come back on the socket as `user` frames, which
 * is how they appear in this tab and every other tab. Stop is `POST …/interrupt`.
 *
 * Errors a person can act on: `credentials_rejected` and `credentials_expired` raise a banner
 * that links to Connect Claude (and a later successful turn takes it down); a lost socket raises
 * "reconnecting…" until the socket is back.
 */

import { api, ApiError, UNAUTHENTICATED_EVENT } from './api.js';
import { hideBanner, showBanner } from './banners.js';
import { refreshClaudeStatus } from './claude-status.js';
import { BUSY_STATES, Conversation } from './conversation.js';
import { h, replace } from './dom.js';
import { SessionSocket } from './session-socket.js';

/** Errors that mean the user must connect Claude again. */
const CREDENTIAL_ERRORS = new Set(['credentials_rejected', 'credentials_expired', 'no_credentials']);

/** Human names of session states. */
export const STATE_LABELS = {
  stopped: 'stopped', starting: 'starting…', idle: 'ready', busy: 'working…',
  stopping: 'stopping…', exited: 'exited', failed: 'failed',
};

/**
 * A short name for a session.
 *
 * @param {{id: string}} session
 * @returns {string}
 */
export function sessionTitle(session) {
  return `Session ${String(session.id).slice(0, 8).replace(/[^A-Za-z0-9]+$/, '')}`;
}

/** The view of one session. */
export class SessionView {
  /**
   * @param {object} session  As `GET /api/sessions/{id}` returns it.
   * @param {object} hooks
   * @param {(state: string) => void} [hooks.onState]  The session's state changed.
   * @param {() => void} [hooks.onGone]  The session was deleted.
   */
  constructor(session, hooks = {}) {
    this.session = session;
    this.hooks = hooks;
    this.state = session.state ?? 'stopped';
    /** A send is in flight (the server answers once the message is taken, or refused). */
    this.sending = false;
    /**
     * The seq of the message sent from this tab whose turn has not ended yet, or null. Its end
     * (a `result`, an `error`, or a state with no child) is recognised by a later seq, so a
     * turn that ends before the send's answer arrives is not waited for forever.
     */
    this.awaiting = null;
    /** The seq of the last frame that ended a turn. */
    this.lastEndSeq = 0;
    this.stopping = false;
    /** The session was deleted (here or elsewhere): nothing more can be sent. */
    this.gone = false;

    this.stateBadge = h('span', { class: 'badge state-badge', 'data-session-state': '' });
    this.statusLine = h('p', { class: 'status-line', role: 'status', 'aria-live': 'polite' });
    this.transcript = h('div', {
      class: 'transcript', role: 'log', 'aria-label': 'Conversation', tabindex: '0',
    });
    this.conversation = new Conversation(this.transcript, {
      onState: (state, frame) => this.setState(state, frame.seq),
      onError: (frame) => this.onErrorFrame(frame),
      onStatus: (text) => this.setStatusLine(text),
      onTurnEnd: (event, seq) => this.onTurnEnd(event, seq),
    });

    this.input = h('textarea', {
      id: 'composer-input', name: 'message', rows: '3', placeholder: 'Message Claude…',
      'aria-describedby': 'composer-hint', autocomplete: 'off',
    });
    this.send = h('button', { type: 'submit', class: 'primary', text: 'Send' });
    this.stop = h('button', { type: 'button', class: 'danger', text: 'Stop' });
    this.composerError = h('div', { class: 'form-error', role: 'alert', hidden: true });
    this.composer = h('form', { class: 'composer', 'aria-label': 'Send a message' },
      h('label', { for: 'composer-input', class: 'visually-hidden', text: 'Message to Claude' }),
      this.input,
      h('div', { class: 'composer-bar' },
        h('p', { id: 'composer-hint', class: 'hint', text: 'Enter sends · Shift+Enter adds a line · Esc stops' }),
        h('div', { class: 'actions' }, this.stop, this.send)),
      this.composerError);

    this.el = h('section', { class: 'session-view', 'aria-labelledby': 'session-title', dataset: { sessionId: session.id } },
      h('header', { class: 'session-header' },
        h('h2', { id: 'session-title', text: sessionTitle(session) }),
        h('span', { class: 'session-meta', text: [session.project, session.model].filter(Boolean).join(' · ') }),
        this.stateBadge),
      this.transcript, this.statusLine, this.composer);

    this.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        this.submit();
      } else if (e.key === 'Escape' && this.isBusy()) {
        e.preventDefault();
        this.interrupt();
      }
    });
    this.stop.addEventListener('click', () => this.interrupt());

    this.socket = new SessionSocket(session.id, {
      onFrame: (frame) => this.conversation.apply(frame),
      onStatus: (status, detail) => this.onSocketStatus(status, detail),
    }, 0);
    this.paint();
  }

  /** Connects the socket and exposes the test hook. */
  mount() {
    this.socket.start();
    window.__sashadTest = {
      /** Drops the socket as a network failure would; `{hold: true}` keeps it down until `resumeSocket()`. */
      dropSocket: (options) => this.socket.drop(options),
      resumeSocket: () => this.socket.resume(),
      lastSeq: () => this.socket.lastSeq,
      socketStatus: () => this.socket.status,
    };
  }

  /** Closes the socket and takes down this view's banners. */
  destroy() {
    this.socket.close();
    hideBanner('connection');
    if (window.__sashadTest?.lastSeq) delete window.__sashadTest;
  }

  isBusy() {
    return BUSY_STATES.has(this.state) || this.sending || this.awaiting !== null;
  }

  /** Notes that the frame `seq` ended a turn (or any chance of one). */
  turnEnded(seq) {
    if (typeof seq !== 'number') return;
    this.lastEndSeq = Math.max(this.lastEndSeq, seq);
    if (this.awaiting !== null && seq > this.awaiting) this.awaiting = null;
  }

  setState(state, seq) {
    this.state = state;
    if (!BUSY_STATES.has(state)) this.stopping = false;
    if (state === 'stopped' || state === 'exited' || state === 'failed') this.turnEnded(seq);
    this.paint();
    this.hooks.onState?.(state);
  }

  paint() {
    const label = STATE_LABELS[this.state] ?? this.state;
    this.stateBadge.textContent = label;
    this.stateBadge.dataset.state = this.state;
    const busy = this.isBusy();
    this.send.disabled = busy || this.gone;
    this.stop.disabled = !BUSY_STATES.has(this.state) || this.stopping || this.gone;
    this.input.disabled = this.gone;
    this.el?.classList.toggle('is-busy', busy);
  }

  setStatusLine(text) {
    this.statusLine.textContent = text ?? '';
  }

  async submit() {
    const text = this.input.value;
    if (!text.trim() || this.isBusy() || this.gone) return;
    this.composerError.hidden = true;
    this.sending = true;
    this.paint();
    try {
      const answer = await api('POST', `/api/sessions/${encodeURIComponent(this.session.id)}/messages`, { content: text });
      if (typeof answer?.seq === 'number' && answer.seq > this.lastEndSeq) this.awaiting = answer.seq;
      // Only now: a refused message stays in the box to try again.
      if (this.input.value === text) this.input.value = '';
    } catch (e) {
      this.showComposerError(e);
    } finally {
      this.sending = false;
      this.paint();
    }
  }

  async interrupt() {
    if (!BUSY_STATES.has(this.state) || this.stopping) return;
    this.stopping = true;
    this.paint();
    this.setStatusLine('Stopping…');
    try {
      await api('POST', `/api/sessions/${encodeURIComponent(this.session.id)}/interrupt`);
    } catch (e) {
      this.stopping = false;
      this.paint();
      this.setStatusLine(null);
      this.showComposerError(e);
    }
  }

  showComposerError(e) {
    const code = e instanceof ApiError ? e.code : null;
    replace(this.composerError, h('span', { text: e.message }),
      code ? [' ', h('code', { class: 'error-code', text: code })] : null,
      code && CREDENTIAL_ERRORS.has(code)
        ? [' ', h('a', { href: '/connect', 'data-route': '', text: 'Connect Claude' })] : null);
    this.composerError.hidden = false;
  }

  onTurnEnd(event, seq) {
    this.turnEnded(seq);
    this.stopping = false;
    if (BUSY_STATES.has(this.state)) this.state = 'idle';
    this.paint();
    if (event.subtype === 'success' && !event.is_error) hideBanner('credentials');
    this.hooks.onState?.(this.state);
  }

  onErrorFrame(frame) {
    this.turnEnded(frame.seq);
    this.paint();
    if (CREDENTIAL_ERRORS.has(frame.error)) {
      const what = frame.error === 'credentials_expired'
        ? 'Your Claude credential has expired.'
        : frame.error === 'no_credentials'
          ? 'No Claude credential is connected.'
          : 'Claude rejected your credential.';
      showBanner('credentials', 'error', [
        h('strong', { text: what }), ' ',
        frame.message ? h('span', { text: frame.message }) : null, ' ',
        h('a', { href: '/connect', 'data-route': '', class: 'banner-action', text: 'Connect Claude' }),
      ], { dismissible: true });
      refreshClaudeStatus().catch(() => {});
    }
  }

  onSocketStatus(status, detail) {
    if (status === 'open') {
      hideBanner('connection');
    } else if (status === 'reconnecting') {
      showBanner('connection', 'warning', [
        h('strong', { text: 'Reconnecting…' }), ' ',
        `${detail ? `${detail[0].toUpperCase()}${detail.slice(1)}` : 'The connection was lost'}; nothing you missed will be lost.`,
      ]);
    } else if (status === 'gone') {
      hideBanner('connection');
      this.gone = true;
      this.paint();
      this.setStatusLine('This session was deleted.');
      this.hooks.onGone?.();
    } else if (status === 'unauthenticated') {
      hideBanner('connection');
      window.dispatchEvent(new CustomEvent(UNAUTHENTICATED_EVENT));
    }
  }
}
