// The room as this client knows it, changed only by `reduce(state, event, data)`: the server's
// events (and the client's own: connected, disconnected, left). Plain data, no DOM: the Vue
// components show it, the tests drive it.

export const CHAT_KEEP = 200;

export function initialState() {
  return {
    phase: 'idle', // idle | joining | joined | reconnecting | lost | left
    room: null,
    self: null,
    peers: [], // others: {id, peer, key, name, state, presence}
    chat: [],
    iceServers: [],
    iceTransportPolicy: 'all',
    ports: {},
    limits: {},
    error: null, // {code, message}
    endedKeys: [],
  };
}

function upsert(peers, p) {
  const i = peers.findIndex((x) => x.id === p.id);
  if (i < 0) peers.push({ ...p });
  else peers[i] = { ...peers[i], ...p };
}

export function reduce(s, event, d) {
  switch (event) {
    case 'joined':
    case 'room:resumed': {
      s.phase = 'joined';
      s.room = d.room;
      s.self = d.self;
      s.peers = d.participants.map((p) => ({ ...p }));
      // The history of a join replaces; a resume adds what was missed.
      const seen = new Set(s.chat.map((m) => m.id));
      s.chat = event === 'joined' ? [...d.chat] : [...s.chat, ...d.chat.filter((m) => !seen.has(m.id))].sort((a, b) => a.id - b.id);
      s.iceServers = d.iceServers || [];
      s.iceTransportPolicy = d.iceTransportPolicy || 'all';
      s.ports = d.ports || {};
      s.limits = d.limits || {};
      s.error = null;
      break;
    }
    case 'peer:joined':
    case 'peer:updated':
      if (s.self && d.id === s.self.id) s.self = { ...s.self, ...d };
      else upsert(s.peers, d);
      break;
    case 'self:updated':
      s.self = { ...s.self, ...d };
      break;
    case 'peer:left':
      s.peers = s.peers.filter((p) => p.id !== d.id);
      break;
    case 'chat:message':
    case 'chat:sent':
      if (!s.chat.some((m) => m.id === d.id)) {
        s.chat.push(d);
        s.chat.sort((a, b) => a.id - b.id);
        if (s.chat.length > CHAT_KEEP) s.chat.splice(0, s.chat.length - CHAT_KEEP);
      }
      break;
    case 'sub:ended':
      s.endedKeys = [...s.endedKeys, d.key].slice(-50);
      break;
    case 'disconnected':
      if (s.phase === 'joined') s.phase = 'reconnecting';
      break;
    case 'resume-failed':
      s.phase = 'lost';
      s.error = d;
      break;
    case 'error':
      s.error = d;
      if (s.phase === 'joining') s.phase = 'idle';
      break;
    case 'left':
      s.phase = 'left';
      s.peers = [];
      break;
    default:
      break;
  }
  return s;
}

/// The msid stream id of a participant's feed (a key's '/' becomes '.').
export const streamIdOf = (key) => key.replace('/', '.');
