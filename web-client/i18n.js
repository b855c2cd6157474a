// i18n.js — every user-visible string of the web client, Vietnamese (default) and English.
// Static markup uses data-i18n="key" (text), data-i18n-title (tooltip) and data-i18n-ph (placeholder);
// scripts call t(key, {var}). The choice is remembered in localStorage under "diemcau.lang".

const D = {
  vi: {
    brand: 'Điểm cầu',
    'lang.label': 'Ngôn ngữ',
    // landing
    'home.title': 'Điểm cầu — họp trực tuyến từ tỉnh đến xã',
    'home.l1': 'Điểm cầu là hệ thống họp truyền hình của chính quyền: điểm cầu chủ trì (tỉnh, Trung ương) phát hình và tiếng tới mọi xã, phường, kể cả nơi có đường truyền yếu.',
    'home.l2': 'Hãy mở đường dẫn do lệnh «diemcau serve» in ra, đúng với vai trò của bạn:',
    'home.chair': 'Chủ trì (/chair) — điều hành, xem lưới các điểm cầu, tắt/bật micrô.',
    'home.site': 'Điểm cầu (/site) — xã, phường, huyện, sở ngành tham dự.',
    'home.tech': 'Kỹ thuật (/tech) — theo dõi chất lượng đường truyền từng điểm.',
    'home.note': 'Mỗi đường dẫn có mã tham gia riêng (token); không chia sẻ cho người khác.',
    // connection states
    'state.connecting': 'Đang kết nối…',
    'state.connected': 'Đã kết nối',
    'state.reconnecting': 'Đang kết nối lại…',
    'state.closed': 'Đã ngắt kết nối',
    'state.error': 'Lỗi kết nối',
    retryIn: 'thử lại sau {s} giây',
    reload: 'Tải lại trang',
    // WebSocket close codes
    'close.4001': 'Mã tham gia không hợp lệ hoặc đã hết hạn. Hãy xin đường dẫn mới.',
    'close.4002': 'Máy chủ từ chối một thông điệp không hợp lệ.',
    'close.4003': 'Thông điệp quá lớn.',
    'close.4004': 'Gửi quá nhiều yêu cầu.',
    'close.4005': 'Điểm cầu này vừa được mở ở cửa sổ hoặc máy khác, kết nối này đã đóng.',
    'close.4006': 'Máy chủ đang tắt hoặc khởi động lại.',
    'close.4007': 'Trang không cùng phiên bản với máy chủ. Hãy tải lại trang.',
    'close.other': 'Mất kết nối tới máy chủ.',
    'media.failed': 'Mất kết nối hình và tiếng.',
    'media.timeout': 'Không thiết lập được kết nối hình và tiếng.',
    'neg.fail': 'Lỗi thương lượng kết nối: {msg}',
    noToken: 'Đường dẫn thiếu mã tham gia (token). Hãy mở đúng đường dẫn được cấp.',
    'err.server': 'Máy chủ báo lỗi: {msg}',
    // local media
    'gum.fail': 'Không dùng được camera và micrô ({msg}). Bạn vẫn xem và nghe được cuộc họp.',
    'gum.nocam': 'Không dùng được camera ({msg}). Micrô vẫn hoạt động.',
    'gum.NotAllowedError': 'chưa được cho phép',
    'gum.NotFoundError': 'không tìm thấy thiết bị',
    'gum.NotReadableError': 'thiết bị đang bận',
    'gum.insecure': 'trình duyệt chỉ cho phép qua HTTPS',
    // controls
    mute: 'Tắt micrô',
    unmute: 'Bật micrô',
    micOff: 'Micrô đang tắt',
    'muted.byChair': 'Chủ trì đã tắt micrô của điểm cầu.',
    'unmuted.byChair': 'Chủ trì đã bật micrô của điểm cầu.',
    sound: 'Bật âm thanh',
    // link quality
    'q.good': 'Đường truyền tốt',
    'q.medium': 'Đường truyền trung bình',
    'q.poor': 'Đường truyền kém',
    'q.unknown': 'Đang đo đường truyền',
    'q.tip': 'Trễ khứ hồi {rtt} ms · mất gói {loss}% · nhận {kin} kbit/s · gửi {kout} kbit/s',
    // site page
    'site.wait': 'Đang chờ hình từ điểm cầu chủ trì…',
    'site.audio': 'Đường truyền yếu: hiện chỉ nhận được tiếng.',
    'site.self': 'Hình của bạn',
    'site.nocam': 'Không có camera',
    // chair page
    'chair.self': 'Hình điểm cầu chủ trì',
    'chair.grid': 'Các điểm cầu',
    'chair.roster': 'Danh sách điểm cầu',
    'chair.count': '{c}/{n} điểm cầu đã kết nối',
    'chair.search': 'Tìm điểm cầu…',
    'tile.empty': 'Ô trống',
    'tile.mute': 'Tắt mic',
    'tile.unmute': 'Bật mic',
    'ps.offline': 'Chưa vào',
    'ps.connecting': 'Đang vào',
    'ps.connected': 'Trực tuyến',
    'kind.province': 'Tỉnh',
    'kind.department': 'Sở, ngành',
    'kind.district': 'Huyện',
    'kind.commune': 'Xã',
    'role.chair': 'Chủ trì',
    'role.site': 'Điểm cầu',
    'role.technician': 'Kỹ thuật',
    // technician page
    'tech.head': 'Thống kê trực tiếp',
    'tech.bridge': 'Cầu nối: {p} kết nối, {s} luồng xử lý',
    'tech.updated': 'Cập nhật lúc {t}',
    'tech.fail': 'Không lấy được số liệu: {msg}',
    'tech.offline': 'Chưa kết nối ({n}):',
    'tech.client': 'Máy khách báo',
    'col.name': 'Điểm cầu',
    'col.role': 'Vai trò',
    'col.state': 'Trạng thái',
    'col.kin': 'Vào kbit/s',
    'col.kout': 'Ra kbit/s',
    'col.loss': 'Mất gói %',
    'col.rtt': 'Trễ ms',
    'col.frames': 'Khung hình',
    'col.samples': 'Mẫu âm',
    'col.lost': 'Gói mất',
    'col.crtt': 'Trễ ms',
    'col.ckin': 'Nhận kbit/s',
  },
  en: {
    brand: 'Diemcau',
    'lang.label': 'Language',
    'home.title': 'Diemcau — video meetings from province to commune',
    'home.l1': 'Diemcau is the government video-meeting bridge: the chairing site (province or national office) sends its picture and voice to every commune and ward, even over weak links.',
    'home.l2': 'Open the link printed by «diemcau serve» for your role:',
    'home.chair': 'Chair (/chair) — runs the meeting, sees the grid of sites, mutes and unmutes.',
    'home.site': 'Site (/site) — a commune, ward, district or department taking part.',
    'home.tech': 'Technician (/tech) — watches the link quality of every site.',
    'home.note': 'Each link carries its own join token; do not share it.',
    'state.connecting': 'Connecting…',
    'state.connected': 'Connected',
    'state.reconnecting': 'Reconnecting…',
    'state.closed': 'Disconnected',
    'state.error': 'Connection error',
    retryIn: 'retrying in {s} s',
    reload: 'Reload page',
    'close.4001': 'The join token is invalid or expired. Ask for a new link.',
    'close.4002': 'The server rejected an invalid message.',
    'close.4003': 'A message was too large.',
    'close.4004': 'Too many requests.',
    'close.4005': 'This site was opened in another window or device; this connection was closed.',
    'close.4006': 'The server is shutting down or restarting.',
    'close.4007': 'This page does not match the server version. Please reload the page.',
    'close.other': 'Lost the connection to the server.',
    'media.failed': 'The audio/video connection was lost.',
    'media.timeout': 'Could not establish the audio/video connection.',
    'neg.fail': 'Connection negotiation failed: {msg}',
    noToken: 'The link has no join token. Open the link you were given.',
    'err.server': 'Server error: {msg}',
    'gum.fail': 'Camera and microphone unavailable ({msg}). You can still watch and listen.',
    'gum.nocam': 'Camera unavailable ({msg}). The microphone works.',
    'gum.NotAllowedError': 'permission denied',
    'gum.NotFoundError': 'no device found',
    'gum.NotReadableError': 'device busy',
    'gum.insecure': 'the browser allows it over HTTPS only',
    mute: 'Mute mic',
    unmute: 'Unmute mic',
    micOff: 'Mic is off',
    'muted.byChair': 'The chair muted this site’s microphone.',
    'unmuted.byChair': 'The chair unmuted this site’s microphone.',
    sound: 'Enable sound',
    'q.good': 'Good link',
    'q.medium': 'Fair link',
    'q.poor': 'Poor link',
    'q.unknown': 'Measuring link',
    'q.tip': 'RTT {rtt} ms · loss {loss}% · in {kin} kbit/s · out {kout} kbit/s',
    'site.wait': 'Waiting for the chair’s video…',
    'site.audio': 'Weak link: receiving sound only for now.',
    'site.self': 'You',
    'site.nocam': 'No camera',
    'chair.self': 'Chair camera',
    'chair.grid': 'Sites',
    'chair.roster': 'Site list',
    'chair.count': '{c}/{n} sites connected',
    'chair.search': 'Find a site…',
    'tile.empty': 'Empty slot',
    'tile.mute': 'Mute',
    'tile.unmute': 'Unmute',
    'ps.offline': 'Offline',
    'ps.connecting': 'Joining',
    'ps.connected': 'Online',
    'kind.province': 'Province',
    'kind.department': 'Department',
    'kind.district': 'District',
    'kind.commune': 'Commune',
    'role.chair': 'Chair',
    'role.site': 'Site',
    'role.technician': 'Technician',
    'tech.head': 'Live statistics',
    'tech.bridge': 'Bridge: {p} peers, {s} shards',
    'tech.updated': 'Updated {t}',
    'tech.fail': 'Could not load statistics: {msg}',
    'tech.offline': 'Not connected ({n}):',
    'tech.client': 'Client reports',
    'col.name': 'Site',
    'col.role': 'Role',
    'col.state': 'State',
    'col.kin': 'In kbit/s',
    'col.kout': 'Out kbit/s',
    'col.loss': 'Loss %',
    'col.rtt': 'RTT ms',
    'col.frames': 'Frames',
    'col.samples': 'Audio samples',
    'col.lost': 'Lost pkts',
    'col.crtt': 'RTT ms',
    'col.ckin': 'In kbit/s',
  },
};

const KEY = 'diemcau.lang';
const subs = [];
let lang = 'vi';
try { if (localStorage.getItem(KEY) === 'en') lang = 'en'; } catch { /* storage blocked: stay Vietnamese */ }

export const getLang = () => lang;
export const has = (key) => key in D.vi;

/** Translates `key`, replacing `{name}` by `vars.name`. Unknown keys come back as-is. */
export function t(key, vars) {
  const s = D[lang][key] ?? D.vi[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] ?? m)) : s;
}

/** Fills every data-i18n* element below `root` and marks the active VI|EN button. */
export function apply(root = document) {
  document.documentElement.lang = lang;
  for (const e of root.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll('[data-i18n-title]')) e.title = t(e.dataset.i18nTitle);
  for (const e of root.querySelectorAll('[data-i18n-ph]')) e.placeholder = t(e.dataset.i18nPh);
  for (const b of root.querySelectorAll('[data-lang]')) b.setAttribute('aria-pressed', b.dataset.lang === lang);
}

/** Calls `f` after every language switch (pages re-render their dynamic text). */
export const onLang = (f) => subs.push(f);

export function setLang(l) {
  lang = l === 'en' ? 'en' : 'vi';
  try { localStorage.setItem(KEY, lang); } catch { /* ignore */ }
  apply();
  subs.forEach((f) => f());
}

// Module scripts run after the document is parsed, so the markup is ready here.
for (const b of document.querySelectorAll('[data-lang]')) b.addEventListener('click', () => setLang(b.dataset.lang));
apply();
