// JSON-RPC 2.0 over the daemon's websocket (/api/current), the same protocol and methods as any client.

export const ENOTAUTHENTICATED = 207;
export const EACCES = 13;

/** A JSON-RPC error reply: code, message and the daemon's data {error, errname, reason, extra}. */
export class RpcError extends Error {
  constructor(error) {
    super((error.data && error.data.reason) || error.message || 'Call failed');
    this.name = 'RpcError';
    this.code = error.code;
    this.data = error.data || null;
  }

  get errno() {
    return this.data ? this.data.error : null;
  }

  /** The -32602 field errors: [[attribute path, message], ...]. */
  get fieldErrors() {
    if (this.code !== -32602 || !this.data || !Array.isArray(this.data.extra)) return [];
    return this.data.extra.filter((e) => Array.isArray(e) && e.length >= 2).map((e) => [String(e[0]), String(e[1])]);
  }
}

/** The websocket closed before the reply came. */
export class ConnectionLost extends Error {
  constructor() {
    super('The connection to the daemon was lost.');
    this.name = 'ConnectionLost';
  }
}

/** One websocket. Dispatches 'notification' (detail: params of collection_update) and 'close'. */
export class Rpc extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.closed = false;
  }

  static pageUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/api/current`;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let opened = false;
      ws.addEventListener('open', () => {
        opened = true;
        resolve(this);
      });
      ws.addEventListener('message', (event) => this.receive(event.data));
      ws.addEventListener('close', () => {
        this.closed = true;
        for (const {reject: fail} of this.pending.values()) fail(new ConnectionLost());
        this.pending.clear();
        if (!opened) reject(new ConnectionLost());
        else if (!this.intentional) this.dispatchEvent(new Event('close'));
      });
    });
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg && typeof msg === 'object' && !('id' in msg)) {
      if (msg.method === 'collection_update') this.dispatchEvent(new CustomEvent('notification', {detail: msg.params}));
      return;
    }
    const waiting = this.pending.get(msg.id);
    if (!waiting) return;
    this.pending.delete(msg.id);
    if ('error' in msg) waiting.reject(new RpcError(msg.error || {}));
    else waiting.resolve(msg.result);
  }

  /** Call ``method`` with positional ``params``; resolves to the result or rejects with RpcError. */
  call(method, params = []) {
    if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {resolve, reject});
      this.ws.send(JSON.stringify({jsonrpc: '2.0', id, method, params}));
    });
  }

  /** Close on purpose: no 'close' event follows. */
  close() {
    this.closed = true;
    this.intentional = true;
    if (this.ws) this.ws.close(1000);
  }
}

/** A call given up on purpose (its AbortSignal fired): its connection was closed, so the daemon cancelled it. */
export class CallCancelled extends Error {
  constructor() {
    super('Cancelled.');
    this.name = 'CallCancelled';
  }
}

/**
 * One call on a websocket of its own, logged in with ``token`` (a single-use one from auth.generate_token),
 * closed when the call ends. JSON-RPC has no way to cancel a call, but the daemon cancels every call of a
 * connection that closes: aborting ``signal`` closes this one, so a long call (a verify against a server that
 * never answers) stops in the daemon too, not just in the page. Rejects with CallCancelled once aborted.
 */
export async function callAlone(url, token, method, params, signal) {
  const rpc = new Rpc(url);
  const abort = () => rpc.close();
  if (signal) {
    if (signal.aborted) throw new CallCancelled();
    signal.addEventListener('abort', abort, {once: true});
  }
  try {
    await rpc.open();
    const login = await rpc.call('auth.login_ex', [{mechanism: 'TOKEN_PLAIN', token}]);
    if (!login || login.response_type !== 'SUCCESS') {
      throw new RpcError({code: -32001, message: 'Not authenticated',
        data: {error: ENOTAUTHENTICATED, errname: 'ENOTAUTHENTICATED', reason: 'Not authenticated'}});
    }
    return await rpc.call(method, params);
  } catch (error) {
    if (signal && signal.aborted) throw new CallCancelled();
    throw error;
  } finally {
    if (signal) signal.removeEventListener('abort', abort);
    rpc.close();
  }
}
