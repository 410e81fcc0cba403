// The local camera and microphone, with the fallbacks a person expects: both, else the one
// that exists, else none (in the room without sending); each refusal becomes a message key.

export function mediaErrorKey(e, secure = true) {
  if (!secure) return 'err_insecure';
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'err_permission';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'err_nodevice';
    case 'NotReadableError':
    case 'AbortError':
      return 'err_busy';
    default:
      return 'err_nodevice';
  }
}

export const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/// Returns {stream, error}: `error` is the message key of what could not be had.
export async function openLocalMedia(md, secure) {
  if (!secure || !md?.getUserMedia) return { stream: null, error: 'err_insecure' };
  let first;
  for (const c of [{ audio: true, video: VIDEO }, { audio: true, video: false }, { audio: false, video: VIDEO }]) {
    try {
      const stream = await md.getUserMedia(c);
      return { stream, error: c.video && c.audio ? null : 'err_nodevice' };
    } catch (e) {
      first ??= e;
      // A refusal is the person's choice: asking again for less would not change it.
      if (e?.name === 'NotAllowedError' || e?.name === 'SecurityError') break;
    }
  }
  return { stream: null, error: mediaErrorKey(first, secure) };
}
