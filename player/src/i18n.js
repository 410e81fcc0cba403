// English and Chinese text. The language is the one chosen before (localStorage), else Chinese
// when the browser prefers it, else English. t(key, vars) fills {name} placeholders.
import { ref } from 'vue';

export const messages = {
  en: {
    title: 'streamgate',
    tagline: 'Video chat rooms whose every camera is also a live stream: HLS, FLV, RTMP, WebRTC.',
    yourName: 'Your name',
    roomName: 'Room name (optional)',
    create: 'Create or join',
    joinRandom: 'Join a random room',
    rooms: 'Rooms',
    noRooms: 'No rooms yet: create one.',
    people: '{n} / {max}',
    join: 'Join',
    full: 'full',
    mute: 'Mute',
    unmute: 'Unmute',
    cameraOff: 'Camera off',
    cameraOn: 'Camera on',
    share: 'Share screen',
    stopShare: 'Stop sharing',
    leave: 'Leave',
    chat: 'Chat',
    send: 'Send',
    typeMessage: 'Message…',
    you: 'you',
    links: 'Links',
    watchLink: 'Watch link',
    copy: 'Copy',
    copied: 'Copied',
    close: 'Close',
    latency: 'latency',
    wechat: 'WeChat: scan the code, the link plays HLS.',
    connecting: 'connecting…',
    reconnecting: 'reconnecting…',
    muted: 'muted',
    speaking: 'speaking',
    quality_good: 'good connection',
    quality_fair: 'fair connection',
    quality_poor: 'poor connection',
    quality_lost: 'connection lost',
    quality_unknown: 'measuring…',
    err_permission: 'The browser was not allowed to use the camera or microphone. Allow them in the address bar and reload.',
    err_nodevice: 'No camera or microphone was found. You are in the room without them.',
    err_busy: 'The camera or microphone is in use by another program.',
    err_insecure: 'Browsers allow the camera only on https (or localhost). Open the https address of this server.',
    'err_room-full': 'This room is full.',
    'err_too-many-rooms': 'The server has as many rooms as it allows.',
    'err_bad-room-name': 'A room name is 1-64 letters, digits, _ . or -.',
    'err_bad-name': 'Please enter a name.',
    'err_server-busy': 'The server is busy; try again in a few seconds.',
    'err_rate-limited': 'Slow down: too many messages.',
    err_lost: 'The connection to the server was lost.',
    err_turn: 'The TURN server refused the credentials: media cannot be relayed.',
    err_media: 'The media connection failed.',
    retry: 'Retry',
    backHome: 'Home',
    alone: 'You are the only one here. Share the room link: {url}',
    tapToHear: 'Tap to hear',
    streams: 'Live streams',
    language: '中文',
  },
  zh: {
    title: 'streamgate',
    tagline: '视频聊天室：每个摄像头同时是一路直播，可用 HLS、FLV、RTMP、WebRTC 观看。',
    yourName: '你的名字',
    roomName: '房间名（可不填）',
    create: '创建或加入',
    joinRandom: '随机加入一个房间',
    rooms: '房间',
    noRooms: '还没有房间，创建一个吧。',
    people: '{n} / {max}',
    join: '加入',
    full: '已满',
    mute: '静音',
    unmute: '取消静音',
    cameraOff: '关闭摄像头',
    cameraOn: '打开摄像头',
    share: '共享屏幕',
    stopShare: '停止共享',
    leave: '离开',
    chat: '聊天',
    send: '发送',
    typeMessage: '输入消息…',
    you: '你',
    links: '链接',
    watchLink: '观看链接',
    copy: '复制',
    copied: '已复制',
    close: '关闭',
    latency: '延迟',
    wechat: '微信：扫码即可用 HLS 观看。',
    connecting: '连接中…',
    reconnecting: '重新连接中…',
    muted: '已静音',
    speaking: '正在说话',
    quality_good: '网络良好',
    quality_fair: '网络一般',
    quality_poor: '网络较差',
    quality_lost: '连接中断',
    quality_unknown: '检测中…',
    err_permission: '浏览器没有获得摄像头或麦克风权限。请在地址栏允许后刷新页面。',
    err_nodevice: '没有找到摄像头或麦克风。你已进入房间，但不发送音视频。',
    err_busy: '摄像头或麦克风正被其他程序使用。',
    err_insecure: '浏览器只在 https（或 localhost）下允许使用摄像头。请打开本服务器的 https 地址。',
    'err_room-full': '这个房间已满。',
    'err_too-many-rooms': '服务器的房间数已达上限。',
    'err_bad-room-name': '房间名为 1-64 个字母、数字、_ . 或 -。',
    'err_bad-name': '请输入名字。',
    'err_server-busy': '服务器繁忙，请几秒后再试。',
    'err_rate-limited': '发送太快了。',
    err_lost: '与服务器的连接已断开。',
    err_turn: 'TURN 服务器拒绝了凭据，无法中继媒体。',
    err_media: '媒体连接失败。',
    retry: '重试',
    backHome: '首页',
    alone: '房间里只有你。把房间链接发给别人：{url}',
    tapToHear: '点击收听',
    streams: '正在直播',
    language: 'EN',
  },
};

/// The language to start in.
export function pickLocale(saved, languages) {
  if (saved === 'en' || saved === 'zh') return saved;
  return (languages || []).some((l) => String(l).toLowerCase().startsWith('zh')) ? 'zh' : 'en';
}

export function translate(locale, key, vars = {}) {
  const text = messages[locale]?.[key] ?? messages.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

const store = typeof localStorage === 'undefined' ? null : localStorage;
export const locale = ref(pickLocale(store?.getItem('lang'), typeof navigator === 'undefined' ? [] : navigator.languages));

export function setLocale(l) {
  locale.value = l;
  store?.setItem('lang', l);
  if (typeof document !== 'undefined') document.documentElement.lang = l === 'zh' ? 'zh-CN' : 'en';
}

export const t = (key, vars) => translate(locale.value, key, vars);
