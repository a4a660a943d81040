/**
 * The server's event stream (GET /api/events through the SDK's `events.subscribe`), shared by
 * every screen, reconnected when it drops. Screens subscribe with `useEvents`.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { StowageApiError, client, type ServerEvent } from './api.js';

type Handler = (event: ServerEvent) => void;
type State = 'connecting' | 'live' | 'reconnecting' | 'off';

const handlers = new Set<Handler>();
const stateListeners = new Set<(s: State) => void>();
let state: State = 'off';
let stop: (() => void) | null = null;

function setState(next: State) {
  state = next;
  stateListeners.forEach((l) => l(next));
}

/** Starts the stream (once per session); `onUnauthorized` is called when the session is no longer valid. */
export function startLive(onUnauthorized: () => void): void {
  if (stop) return;
  let stopped = false;
  let current: (() => void) | null = null;
  let delay = 1000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connect = () => {
    if (stopped) return;
    setState(state === 'live' || state === 'reconnecting' ? 'reconnecting' : 'connecting');
    const sub = client.events.subscribe((event) => handlers.forEach((h) => h(event)));
    current = sub;
    sub.ready.then(
      () => {
        delay = 1000;
        setState('live');
        // Anything that happened while the stream was down: screens reload on `hello`.
      },
      (err: unknown) => {
        if (err instanceof StowageApiError && err.status === 401) {
          stopped = true;
          onUnauthorized();
        }
      },
    );
    void sub.closed.then(() => {
      if (stopped) return;
      setState('reconnecting');
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15_000);
    });
  };
  connect();
  stop = () => {
    stopped = true;
    clearTimeout(timer);
    current?.();
    stop = null;
    setState('off');
  };
}

export function stopLive(): void {
  stop?.();
}

/** Calls `handler` with every server event while the component is mounted. */
export function useEvents(handler: Handler): void {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    const h: Handler = (e) => ref.current(e);
    handlers.add(h);
    return () => void handlers.delete(h);
  }, []);
}

export function useLiveState(): State {
  const [s, setS] = useState(state);
  useEffect(() => {
    stateListeners.add(setS);
    return () => void stateListeners.delete(setS);
  }, []);
  return s;
}

/** Calls `fn` at most once per `ms` (trailing), for reloading on bursts of events. */
export function throttle(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      fn();
    }, ms);
  };
}
