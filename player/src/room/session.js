// The one room connection of this tab: its socket, the room state (reactive) and the lobby's
// room list. The home page and the room page share it, so that "join random" on the home page
// carries on in the room page it lands on.
import { reactive } from 'vue';
import { io } from 'socket.io-client';
import { Signalling } from './signalling.js';
import { initialState, reduce } from './state.js';

export const state = reactive(initialState());
export const lobby = reactive({ rooms: [], connected: false });
const listeners = new Set();
let signalling = null;

/// Calls `fn(event, data)` for every server event; returns the unsubscribe function.
export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function dispatch(event, data) {
  if (event === 'rooms:update') lobby.rooms = data.rooms;
  if (event === 'connected') lobby.connected = true;
  if (event === 'disconnected') lobby.connected = false;
  if (event === 'room:error' && data?.code === 'resume-expired') reduce(state, 'resume-failed', data);
  reduce(state, event, data);
  for (const fn of listeners) fn(event, data);
}

export function connection() {
  if (!signalling) {
    const storage = typeof sessionStorage === 'undefined' ? null : sessionStorage;
    signalling = new Signalling((opts) => io(opts), dispatch, { storage });
  }
  return signalling;
}

export async function listRooms() {
  const r = await connection().request('rooms:list');
  lobby.rooms = r.rooms;
  return r.rooms;
}

/// Joins `{room}` or `{random: true}` as `name`; the state holds the result.
export async function join(req) {
  state.phase = 'joining';
  try {
    const r = await connection().request('room:join', req);
    dispatch('joined', r);
    return r;
  } catch (e) {
    reduce(state, 'error', { code: e.code, message: e.message });
    throw e;
  }
}

export async function leave() {
  try {
    await connection().request('room:leave');
  } finally {
    reduce(state, 'left');
    Object.assign(state, initialState());
  }
}
