// The room's Socket.IO connection: requests answered in acks ({ok, ...} or {ok:false, error}),
// the server's events to a handler, and the resume token sent in the handshake's `auth` on
// every reconnect (socket.io-client sends what it buffered right after the handshake, so the
// resume is handled before those).

export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const EVENTS = ['peer:joined', 'peer:updated', 'peer:left', 'self:updated', 'chat:message', 'sub:offer', 'sub:ended', 'sub:closed', 'room:error', 'room:resumed', 'rooms:update'];

export class Signalling {
  /// `connect(opts)` makes the socket (socket.io-client's `io` bound to the URL); `onEvent(name,
  /// data)` gets the server's events and 'connected' / 'disconnected'.
  constructor(connect, onEvent, { timeoutMs = 8000, storage = null, storageKey = 'streamgate.resume' } = {}) {
    this.onEvent = onEvent;
    this.timeoutMs = timeoutMs;
    this.storage = storage;
    this.storageKey = storageKey;
    this.resume = storage?.getItem(storageKey) || null;
    this.socket = connect({
      transports: ['websocket', 'polling'],
      reconnectionDelay: 500,
      reconnectionDelayMax: 3000,
      auth: (cb) => cb(this.resume ? { resume: this.resume } : {}),
    });
    for (const e of EVENTS) this.socket.on(e, (d) => this.event(e, d));
    this.socket.on('connect', () => onEvent('connected', { id: this.socket.id }));
    this.socket.on('disconnect', (reason) => onEvent('disconnected', { reason }));
    this.socket.on('connect_error', (e) => onEvent('connect_error', { message: e?.message }));
  }

  event(name, d) {
    if (name === 'room:resumed') this.keep(d.resume);
    if (name === 'room:error' && d?.code === 'resume-expired') this.keep(null);
    this.onEvent(name, d);
  }

  keep(token) {
    this.resume = token || null;
    if (!this.storage) return;
    if (token) this.storage.setItem(this.storageKey, token);
    else this.storage.removeItem(this.storageKey);
  }

  /// Sends `event` and waits for its ack; throws RequestError on {ok:false} or a timeout.
  async request(event, data = {}) {
    let r;
    try {
      r = await this.socket.timeout(this.timeoutMs).emitWithAck(event, data);
    } catch {
      throw new RequestError('timeout', `${event}: no answer in ${this.timeoutMs} ms`);
    }
    if (!r || r.ok !== true) {
      const e = r?.error || {};
      throw new RequestError(e.code || 'error', e.message || `${event} failed`);
    }
    if (event === 'room:join') this.keep(r.resume);
    if (event === 'room:leave') this.keep(null);
    return r;
  }

  close() {
    this.socket.disconnect();
  }
}
