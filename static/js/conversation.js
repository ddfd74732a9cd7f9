/**
 * @file One session's conversation, drawn from the socket's frames (DESIGN §5).
 *
 * Frames are applied in `seq` order, and a frame whose `seq` is not above the last one applied
 * is dropped: replays after a reconnect overlap what the page already shows, and this is what
 * keeps every message on screen exactly once.
 *
 * The CLI's stream-json (`claude` frames) is drawn like this:
 * - `stream_event` text deltas grow a draft text block as they come; the final `assistant` line
 *   for the same API message settles it, rendered as Markdown. The CLI writes one `assistant`
 *   line per content block, so each line settles the oldest unsettled draft of its kind.
 * - `tool_use` blocks become collapsible `<details>` with the tool's name and input; the
 *   `tool_result` in a later CLI `user` line fills in the result of the block with its id.
 * - `result` ends the turn: a line with the outcome, duration and cost.
 * - `system/api_retry` is a passing status ("retrying"), not history; other lines the page has
 *   no use for (`control_response`, `rate_limit_event`, `system/status`, unknown types) are
 *   ignored.
 * The person's own messages come from `user` frames (the server's echo), never from the page's
 * own send, so every tab shows the same conversation.
 */

import { h, replace } from './dom.js';
import { formatCost, formatDuration } from './format.js';
import { renderMarkdown } from './markdown.js';

/** Longest tool input or result drawn, in characters; the rest is summarised. */
const MAX_TOOL_TEXT = 20_000;

/** Session states in which a turn is under way. */
export const BUSY_STATES = new Set(['starting', 'busy', 'stopping']);

/**
 * @typedef {object} ConversationHooks
 * @property {(state: string, frame: object) => void} [onState]  A `state` frame.
 * @property {(frame: object) => void} [onError]  An `error` frame.
 * @property {(text: string|null) => void} [onStatus]  A passing status line, or null to clear it.
 * @property {(event: object, seq: number) => void} [onTurnEnd]  A `result` line, and its frame's seq.
 */

/** Draws one session's frames into a container. */
export class Conversation {
  /**
   * @param {HTMLElement} root  The scrolling transcript element.
   * @param {ConversationHooks} [hooks]
   */
  constructor(root, hooks = {}) {
    this.root = root;
    this.hooks = hooks;
    /** The highest `seq` applied. */
    this.lastSeq = 0;
    /** @type {Map<string, {el: HTMLElement, drafts: Map<number, any>}>} API message id → its article */
    this.messages = new Map();
    /** @type {Map<string, HTMLDetailsElement>} tool_use id → its block */
    this.tools = new Map();
    this.streamMessageId = null;
    this.scrollPending = false;
    this.stick = true;
  }

  /**
   * Applies one frame. Returns false when it was a duplicate (its `seq` was seen already).
   *
   * @param {object} frame  A parsed server frame.
   * @returns {boolean}
   */
  apply(frame) {
    if (typeof frame?.seq === 'number') {
      if (frame.seq <= this.lastSeq) return false;
      this.lastSeq = frame.seq;
    }
    this.noteScroll();
    switch (frame?.type) {
      case 'claude':
        this.claude(frame.event ?? {}, frame.seq);
        break;
      case 'user':
        this.closeDrafts();
        this.add(h('article', { class: 'msg msg-user', dataset: { seq: frame.seq } },
          h('h3', { class: 'visually-hidden', text: 'You' }),
          h('div', { class: 'msg-body', text: contentText(frame.content) })));
        break;
      case 'state':
        // A `failed` state follows the `error` that says why; it adds a note only with details.
        if (frame.state === 'exited' || (frame.state === 'failed' && (frame.code !== undefined || frame.stderrTail))) {
          this.exitNote(frame);
        }
        this.hooks.onState?.(frame.state, frame);
        break;
      case 'error':
        this.add(h('div', { class: 'note note-error', role: 'note', dataset: { error: frame.error ?? '' } },
          h('strong', { text: errorTitle(frame.error) }), ' ',
          h('span', { text: frame.message ?? '' })));
        this.hooks.onError?.(frame);
        break;
      case 'raw':
        this.add(h('pre', { class: 'note note-raw', text: frame.line ?? '' }));
        break;
      case 'gap':
        this.add(h('div', { class: 'note note-info', role: 'note' },
          `Events ${frame.from}–${frame.to} are no longer kept by the server, so part of this conversation is missing here.`));
        break;
      default:
        break;
    }
    return true;
  }

  /** Removes everything drawn. */
  clear() {
    replace(this.root);
    this.lastSeq = 0;
    this.messages.clear();
    this.tools.clear();
    this.streamMessageId = null;
  }

  claude(event, seq) {
    switch (event.type) {
      case 'stream_event':
        this.streamEvent(event);
        break;
      case 'assistant':
        this.hooks.onStatus?.(null);
        this.assistant(event);
        break;
      case 'user':
        this.cliUser(event);
        break;
      case 'result':
        this.result(event, seq);
        break;
      case 'system':
        if (event.subtype === 'api_retry') {
          const what = [event.error_status, event.error].filter(Boolean).join(' ');
          this.hooks.onStatus?.(`Claude's API answered ${what || 'an error'}; retrying (attempt ${event.attempt ?? '?'} of ${event.max_retries ?? '?'})…`);
        }
        break;
      default:
        // control_response, rate_limit_event, and types newer than this page.
        break;
    }
  }

  streamEvent(line) {
    const ev = line.event ?? {};
    if (ev.type === 'message_start') {
      this.streamMessageId = ev.message?.id ?? null;
      this.hooks.onStatus?.(null);
      return;
    }
    const id = line.api_message_id ?? this.streamMessageId;
    if (!id) return;
    if (ev.type === 'content_block_start') {
      const block = ev.content_block ?? {};
      if (block.type === 'text') this.draft(id, ev.index, 'text', block.text ?? '');
      else if (block.type === 'tool_use') this.draft(id, ev.index, 'tool_use', '', block.name);
    } else if (ev.type === 'content_block_delta') {
      const delta = ev.delta ?? {};
      if (delta.type === 'text_delta') {
        const d = this.draft(id, ev.index, 'text', '');
        d.text.appendData(delta.text ?? '');
      } else if (delta.type === 'input_json_delta') {
        const d = this.draft(id, ev.index, 'tool_use', '');
        d.text.appendData(delta.partial_json ?? '');
      }
    }
  }

  /** The draft block at `index` of message `id`, created when missing. */
  draft(id, index, kind, initial, toolName) {
    const msg = this.message(id);
    let d = msg.drafts.get(index);
    if (d && d.kind === kind) return d;
    const text = document.createTextNode(initial);
    let el;
    if (kind === 'text') {
      el = h('div', { class: 'block block-text streaming' }, text);
    } else {
      el = h('details', { class: 'block block-tool streaming' },
        h('summary', {}, h('span', { class: 'tool-name', text: toolName ?? 'tool' }), ' ',
          h('span', { class: 'tool-status', text: 'preparing…' })),
        h('div', { class: 'tool-section' }, h('h4', { text: 'Input' }), h('pre', {}, text)));
    }
    d = { kind, el, text, settled: false, index };
    msg.drafts.set(index, d);
    msg.el.append(el);
    this.root.setAttribute('aria-busy', 'true');
    return d;
  }

  /** The article of API message `id`, created when missing. */
  message(id) {
    let msg = this.messages.get(id);
    if (!msg) {
      this.closeDrafts(id);
      const el = h('article', { class: 'msg msg-assistant', dataset: { messageId: id } },
        h('h3', { class: 'visually-hidden', text: 'Claude' }));
      msg = { el, drafts: new Map() };
      this.messages.set(id, msg);
      this.add(el);
    }
    return msg;
  }

  assistant(event) {
    const m = event.message ?? {};
    const id = m.id ?? `anon-${this.lastSeq}`;
    const msg = this.message(id);
    const content = Array.isArray(m.content) ? m.content : [];
    for (const block of content) {
      if (block.type === 'text') {
        const d = this.takeDraft(msg, 'text');
        const el = d?.el ?? h('div', { class: 'block block-text' });
        if (!d) msg.el.append(el);
        el.classList.remove('streaming');
        el.classList.add('settled');
        replace(el, renderMarkdown(block.text ?? ''));
      } else if (block.type === 'tool_use') {
        const d = this.takeDraft(msg, 'tool_use');
        const el = toolBlock(block);
        if (d) d.el.replaceWith(el);
        else msg.el.append(el);
        if (block.id) this.tools.set(block.id, el);
      } else if (block.type === 'thinking' && block.thinking) {
        msg.el.append(h('details', { class: 'block block-thinking' },
          h('summary', { text: 'Thinking' }), h('div', { class: 'thinking', text: block.thinking })));
      }
    }
    if (event.aborted) {
      msg.el.append(h('p', { class: 'msg-flag', text: 'Interrupted' }));
    }
    this.updateBusy();
  }

  /** The oldest unsettled draft of a kind in a message, marked settled. */
  takeDraft(msg, kind) {
    const drafts = [...msg.drafts.values()]
      .filter((d) => d.kind === kind && !d.settled)
      .sort((a, b) => a.index - b.index);
    const d = drafts[0];
    if (d) d.settled = true;
    return d;
  }

  /** Settles drafts left open (a turn that ended without its final line), as plain text. */
  closeDrafts(exceptId) {
    for (const [id, msg] of this.messages) {
      if (id === exceptId) continue;
      for (const d of msg.drafts.values()) {
        if (d.settled) continue;
        d.settled = true;
        d.el.classList.remove('streaming');
        if (d.kind === 'text') {
          d.el.classList.add('settled');
          replace(d.el, renderMarkdown(d.text.data));
        }
      }
    }
    this.updateBusy();
  }

  updateBusy() {
    const open = [...this.messages.values()].some((m) => [...m.drafts.values()].some((d) => !d.settled));
    if (open) this.root.setAttribute('aria-busy', 'true');
    else this.root.removeAttribute('aria-busy');
  }

  cliUser(event) {
    const content = event.message?.content;
    if (typeof content === 'string') {
      if (content.trim()) this.add(h('div', { class: 'note note-info', text: content }));
      return;
    }
    if (!Array.isArray(content)) return;
    for (const block of content) {
      if (block.type === 'tool_result') {
        const el = this.tools.get(block.tool_use_id);
        const result = toolResult(block);
        if (el) {
          el.querySelector('.tool-result')?.remove();
          el.append(result);
          const status = el.querySelector('.tool-status');
          if (status) status.textContent = block.is_error ? 'error' : 'done';
          el.classList.toggle('tool-error', Boolean(block.is_error));
        } else {
          this.add(h('details', { class: 'block block-tool' },
            h('summary', {}, h('span', { class: 'tool-name', text: 'Tool result' })), result));
        }
      } else if (block.type === 'text' && block.text) {
        this.add(h('div', { class: 'note note-info', text: block.text }));
      }
    }
  }

  result(event, seq) {
    this.closeDrafts();
    this.hooks.onStatus?.(null);
    const ok = event.subtype === 'success' && !event.is_error;
    const interrupted = event.terminal_reason === 'aborted_streaming'
      || event.subtype === 'error_during_execution';
    const outcome = ok ? 'Done' : interrupted ? 'Stopped' : 'Ended with an error';
    const parts = [outcome];
    if (typeof event.duration_ms === 'number') parts.push(formatDuration(event.duration_ms));
    if (typeof event.total_cost_usd === 'number') parts.push(`cost ${formatCost(event.total_cost_usd)}`);
    const line = h('div', {
      class: `turn-result ${ok ? 'turn-ok' : interrupted ? 'turn-stopped' : 'turn-error'}`,
      dataset: { seq },
      title: 'Cost is the total Claude Code reports for this session process.',
    }, parts.join(' · '));
    if (!ok && !interrupted && typeof event.result === 'string' && event.result) {
      line.append(h('div', { class: 'turn-error-text', text: event.result }));
    }
    this.add(line);
    this.hooks.onTurnEnd?.(event, seq);
  }

  exitNote(frame) {
    const what = frame.state === 'failed' ? 'Claude could not be started' : 'Claude stopped unexpectedly';
    const code = typeof frame.code === 'number' ? ` (exit code ${frame.code})` : '';
    const note = h('div', { class: 'note note-error', role: 'note' },
      h('strong', { text: `${what}${code}.` }),
      frame.state === 'exited' ? ' Your next message starts it again.' : '');
    if (frame.stderrTail) {
      note.append(h('details', {}, h('summary', { text: 'Its last error output' }),
        h('pre', { text: frame.stderrTail })));
    }
    this.add(note);
  }

  add(el) {
    this.root.append(el);
  }

  /** Keeps the view pinned to the bottom while the person has not scrolled up. */
  noteScroll() {
    if (this.scrollPending) return;
    const r = this.root;
    this.stick = r.scrollHeight - r.scrollTop - r.clientHeight < 80;
    this.scrollPending = true;
    requestAnimationFrame(() => {
      this.scrollPending = false;
      if (this.stick) r.scrollTop = r.scrollHeight;
    });
  }
}

/**
 * The text of a message's content: a string, or the text of its blocks.
 *
 * @param {string|Array} content
 * @returns {string}
 */
export function contentText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => {
    if (b?.type === 'text') return b.text ?? '';
    if (b?.type === 'image') return '[image]';
    return '';
  }).filter(Boolean).join('\n');
}

function clip(text) {
  if (text.length <= MAX_TOOL_TEXT) return text;
  return `${text.slice(0, MAX_TOOL_TEXT)}\n… (${text.length - MAX_TOOL_TEXT} more characters)`;
}

/** A one-line summary of a tool's input: its command, path, pattern or URL. */
function toolSummary(input) {
  if (!input || typeof input !== 'object') return '';
  const value = input.command ?? input.file_path ?? input.path ?? input.pattern ?? input.url
    ?? input.query ?? input.description ?? '';
  const text = String(value).replace(/\s+/g, ' ').trim();
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

function toolBlock(block) {
  let input;
  try {
    input = JSON.stringify(block.input ?? {}, null, 2);
  } catch {
    input = String(block.input);
  }
  const summary = toolSummary(block.input);
  return h('details', { class: 'block block-tool', dataset: { toolId: block.id ?? '' } },
    h('summary', {},
      h('span', { class: 'tool-name', text: block.name ?? 'tool' }),
      summary ? [' ', h('code', { class: 'tool-summary', text: summary })] : null,
      ' ', h('span', { class: 'tool-status', text: 'running…' })),
    h('div', { class: 'tool-section tool-input' }, h('h4', { text: 'Input' }), h('pre', { text: clip(input) })));
}

function toolResult(block) {
  let text;
  if (typeof block.content === 'string') text = block.content;
  else if (Array.isArray(block.content)) text = contentText(block.content);
  else text = '';
  return h('div', { class: `tool-section tool-result${block.is_error ? ' is-error' : ''}` },
    h('h4', { text: block.is_error ? 'Error' : 'Result' }),
    h('pre', { text: clip(text) || '(no output)' }));
}

const ERROR_TITLES = {
  credentials_rejected: 'Claude rejected your credential.',
  credentials_expired: 'Your Claude credential expired.',
  no_credentials: 'No Claude credential is connected.',
  spawn_failed: 'Claude could not be started.',
  session_limit: 'Too many sessions.',
  turn_timeout: 'The turn took too long and was stopped.',
  session_failed: 'This session failed.',
  line_too_long: 'Claude wrote a line too long to pass on.',
};

function errorTitle(code) {
  return ERROR_TITLES[code] ?? 'Error:';
}
