/**
 * @file The WebSocket of one session (DESIGN §5), kept open across network trouble.
 *
 * It connects to `/ws/sessions/{id}?after=N`, where N is the highest `seq` handed on so far, so
 * the server first replays what the page missed and then streams live events. The cookie
 * authenticates it (the token never goes in the URL). Frames whose `seq` is not above N are
 * dropped here, so a replay that overlaps what was shown never shows twice.
 *
 * When the socket closes without the page asking, it reconnects with backoff (at once after
 * 1013, "client too slow"), and reports `reconnecting` so the page can say so. Before retrying
 * a socket that closed with 1001 or failed to open, it asks `GET /api/sessions/{id}`: a 404
 * means the session is gone (`gone`), a 401 that the login expired (`unauthenticated`).
 */

import { api, ApiError } from './api.js';

/** Backoff of reconnects, in ms: first, growth factor, ceiling. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_FACTOR = 2;
const BACKOFF_MAX_MS = 5000;

/**
 * @typedef {'connecting'|'open'|'reconnecting'|'gone'|'unauthenticated'|'closed'} SocketStatus
 */

/** One session's socket. */
export class SessionSocket {
  /**
   * @param {string} sessionId
   * @param {object} hooks
   * @param {(frame: object) => void} hooks.onFrame  Each new frame, in order, once.
   * @param {(status: SocketStatus, detail?: string) => void} [hooks.onStatus]
   * @param {number} [after]  Start after this seq (0: the whole retained history).
   */
  constructor(sessionId, { onFrame, onStatus }, after = 0) {
    this.sessionId = sessionId;
    this.onFrame = onFrame;
    this.onStatus = onStatus ?? (() => {});
    this.lastSeq = after;
    this.ws = null;
    this.attempts = 0;
    this.stopped = false;
    this.held = false;
    this.timer = null;
    this.status = 'connecting';
  }

  /** Opens the socket. */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** Closes it for good (the page moved on). */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      this.ws.close(1000, 'page closed the session');
      this.ws = null;
    }
    this.setStatus('closed');
  }

  /**
   * Closes the socket as a network failure would, for tests and for trying the reconnect path
   * by hand. With `hold`, it stays disconnected until {@link SessionSocket#resume}.
   *
   * @param {{hold?: boolean}} [options]
   */
  drop(options = {}) {
    this.held = Boolean(options.hold);
    const ws = this.ws;
    if (!ws || this.stopped) return;
    // As a failed network would: frames still in flight are lost (the reconnect's replay
    // brings them back), and nothing waits for the closing handshake.
    ws.onmessage = null;
    ws.onclose = null;
    ws.close(4000, 'dropped by the page');
    this.ws = null;
    this.afterClose(4000, true);
  }

  /** Lets a held socket reconnect. */
  resume() {
    this.held = false;
    if (!this.ws && !this.stopped) this.connect();
  }

  setStatus(status, detail) {
    this.status = status;
    this.onStatus(status, detail);
  }

  url() {
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const id = encodeURIComponent(this.sessionId);
    return `${scheme}//${window.location.host}/ws/sessions/${id}?after=${this.lastSeq}`;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped || this.held) return;
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.attempts = 0;
      this.setStatus('open');
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof frame.seq === 'number') {
        if (frame.seq <= this.lastSeq) return;
        this.lastSeq = frame.seq;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      this.afterClose(event.code, opened);
    };
  }

  async afterClose(code, opened) {
    this.setStatus('reconnecting', closeReason(code));
    if (code === 1001 || !opened) {
      // The session may be gone, or the login expired: a socket cannot say, the API can.
      try {
        await api('GET', `/api/sessions/${encodeURIComponent(this.sessionId)}`, undefined, { quiet401: true });
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          this.stopped = true;
          this.setStatus('gone');
          return;
        }
        if (e instanceof ApiError && e.status === 401) {
          this.stopped = true;
          this.setStatus('unauthenticated');
          return;
        }
      }
    }
    if (this.stopped || this.held) return;
    const delay = code === 1013 ? 0
      : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * BACKOFF_FACTOR ** this.attempts) * (0.75 + Math.random() / 2);
    this.attempts += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

function closeReason(code) {
  switch (code) {
    case 1001: return 'the server is restarting';
    case 1009: return 'a message was too big';
    case 1013: return 'the connection fell behind';
    case 4000: return 'the connection was dropped';
    default: return 'the connection was lost';
  }
}
