/**
 * @file The recorded CLI session (`tests/fixtures/claude-2.1.332-session.jsonl`) as the socket
 * frames a daemon would send for it (DESIGN §5): each `// stdin:` user line becomes a `user`
 * echo preceded by a `busy` state, each stdout line a `claude` frame, and each `result` is
 * followed by an `idle` state. Sequence numbers start at 1.
 */

import fs from 'node:fs';
import path from 'node:path';

import { ROOT } from './harness.js';

/** The recorded session. */
export const SESSION_FIXTURE = path.join(ROOT, 'tests/fixtures/claude-2.1.332-session.jsonl');

/**
 * The frames of the recorded session, split into turns.
 *
 * @returns {Array<Array<object>>} one array of frames (without `seq`) per turn
 */
export function fixtureTurns() {
  const turns = [];
  let turn = null;
  for (const line of fs.readFileSync(SESSION_FIXTURE, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    if (line.startsWith('// stdin:')) {
      const input = JSON.parse(line.slice('// stdin:'.length));
      if (input.type !== 'user') continue;
      turn = [{ type: 'state', state: 'busy' }, { type: 'user', content: input.message.content }];
      turns.push(turn);
      continue;
    }
    if (line.startsWith('//') || !turn) continue;
    const event = JSON.parse(line);
    turn.push({ type: 'claude', event });
    if (event.type === 'result') turn.push({ type: 'state', state: 'idle' });
  }
  return turns;
}

/**
 * Numbers frames from `first` on.
 *
 * @param {Array<object>} frames
 * @param {number} first
 * @returns {Array<object>}
 */
export function numbered(frames, first) {
  return frames.map((f, i) => ({ seq: first + i, ...f }));
}
