"use strict";

// Chat room client. Everything from the server is inserted with textContent
// or built with DOM APIs: message text is user input and must never be parsed
// as HTML. Every word shown comes from #chat-strings (translated by the server).
(() => {
  const MAX_BACKOFF_MS = 10000;
  const ERROR_DISPLAY_MS = 6000;
  // Close codes the server explains in an error frame just before closing.
  // The session or account ended: a reload shows the login page (or, after a
  // password change in this browser, the room again).
  const CLOSE_REVOKED = 4001;
  // The account has too many sockets or rooms open: retry, but slowly.
  const CLOSE_LIMITED = 4029;
  // The connection fell too far behind the room (4008) needs nothing of its
  // own: reconnecting soon, onHistory fills the gap after the newest id shown.
  const LIMITED_RETRY_MS = 30000;
  const PAGE_SIZE = 50;
  // Older messages are asked for this close (px) to the top, before the
  // reader hits it; "at the bottom" allows the same slack for rounding.
  const LOAD_MARGIN_PX = 200;
  const BOTTOM_SLACK_PX = 40;
  // The counter appears when this share of the limit is left.
  const COUNTER_FROM = 0.1;
  // A message whose echo takes longer (a stalled connection) leaves the box
  // for the outbox, so the box is free again.
  const ECHO_WAIT_MS = 5000;
  // Refusals for now (an error frame's "reason"): a message typed while away
  // and refused on its way out is sent again, with its cid, after a pause.
  const REFUSED_FOR_NOW = new Set(["busy", "not_sent", "rate_limited"]);
  const RESEND_AFTER_MS = 3000;
  // A desktop notification's body ("name: text") is cut to this many characters.
  const NOTIFICATION_BODY_MAX = 120;

  const byId = (id) => document.getElementById(id);
  const fromJson = (id) => JSON.parse(byId(id).textContent);
  const roomName = fromJson("room-name");
  const me = fromJson("chat-username");
  const strings = fromJson("chat-strings");
  const log = byId("chat-log");
  const form = byId("chat-form");
  const input = byId("chat-message-input");
  const stateEl = byId("connection-state");
  const presenceEl = byId("presence");
  const errorEl = byId("chat-error");
  const refusalEl = byId("chat-refusal");
  const counterEl = byId("chat-counter");
  const announceEl = byId("chat-announce");
  const jumpButton = byId("jump-latest");
  const notifyButton = byId("notify-toggle");
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${window.location.host}/ws/chat/${encodeURIComponent(roomName)}/`;
  const lang = document.documentElement.lang || undefined;
  const timeFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
  const fullFormat = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "medium" });
  const dayFormat = new Intl.DateTimeFormat(lang, { dateStyle: "full" });
  const baseTitle = document.title;
  const maxLength = input.maxLength;
  // The outbox and the box's text outlive a reload of this tab (not the tab).
  // Keyed by account too: whoever signs in next in this tab must not send them.
  const OUTBOX_KEY = `chatstack:outbox:${me}:${roomName}`;
  // Whether the reader turned notifications on; the browser keeps the permission.
  const NOTIFY_KEY = "chatstack:notify";

  let socket = null;
  let failures = 0;
  let errorTimer = null;
  // Messages not yet confirmed by their echo, in the order typed; only the
  // first is on the wire at a time, so they arrive in that order.
  const outbox = [];
  // The cid of the text in the box if the server refused it: sent again
  // unchanged it keeps its cid, so a message that was stored after all is not
  // stored twice.
  let refused = null;
  // Nothing leaves the outbox before this time (Date.now()): the server
  // refused its head for now.
  let holdUntil = 0;
  let olderState = "idle"; // "loading", "complete"
  let unread = 0;
  // Before reconnecting: the newest id on screen, to fill what was missed while away.
  let gapAfter = null;
  let notifying = false;

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
  }

  function newCid() {
    if (window.crypto && crypto.randomUUID) {
      return crypto.randomUUID();
    }
    // randomUUID needs a secure context; plain-HTTP development has none.
    return Array.from(crypto.getRandomValues(new Uint32Array(4)), (n) => n.toString(16)).join("-");
  }

  // Storage can be off or full (private modes, policies): the page works without it.
  function readStored(storage, key) {
    try {
      return storage.getItem(key);
    } catch {
      return null;
    }
  }

  function writeStored(storage, key, value) {
    try {
      storage.setItem(key, value);
    } catch {
      // Nothing kept; nothing else changes.
    }
  }

  function setState(state) {
    stateEl.dataset.state = state;
    stateEl.textContent = strings[state];
  }

  function connected() {
    return socket !== null && socket.readyState === WebSocket.OPEN;
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { errorEl.hidden = true; }, ERROR_DISPLAY_MS);
  }

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < BOTTOM_SLACK_PX;
  }

  function scrollToLatest() {
    log.scrollTop = log.scrollHeight;
  }

  // Text with its http(s) links as anchors; anything else stays text.
  const LINK = /\bhttps?:\/\/[^\s<>"]+/gi;
  const TRAILING = /[.,;:!?'")\]}]+$/;

  function linkify(container, text) {
    let last = 0;
    for (const match of text.matchAll(LINK)) {
      const href = match[0].replace(TRAILING, "");
      let parsed = null;
      try {
        parsed = new URL(href);
      } catch {
        continue;
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
        continue;
      }
      container.append(text.slice(last, match.index));
      const anchor = document.createElement("a");
      anchor.href = parsed.href;
      anchor.textContent = href;
      anchor.target = "_blank";
      anchor.rel = "noopener noreferrer nofollow";
      container.append(anchor);
      last = match.index + href.length;
    }
    container.append(text.slice(last));
  }

  const escapedName = me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const MENTION = new RegExp(`(^|\\W)@${escapedName}(?!\\w)`, "u");

  function renderTime(ts) {
    const date = new Date(ts);
    const time = document.createElement("time");
    time.dateTime = ts;
    time.textContent = timeFormat.format(date);
    time.title = fullFormat.format(date);
    return time;
  }

  function renderMessage(msg) {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(msg.id);
    item.dataset.day = dayKey(msg.ts);
    item.classList.toggle("own", msg.user === me);
    item.classList.toggle("mention", msg.user !== me && MENTION.test(msg.message));
    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = msg.user;
    meta.append(author, " ", renderTime(msg.ts));
    const text = document.createElement("p");
    text.className = "text";
    linkify(text, msg.message);
    item.append(meta, text);
    return item;
  }

  function dayKey(ts) {
    const date = new Date(ts);
    return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
  }

  // One separator before the first message of each day (local time).
  function renderDays() {
    log.querySelectorAll("li.day").forEach((node) => node.remove());
    let day = null;
    log.querySelectorAll("li.message").forEach((node) => {
      if (node.dataset.day !== day) {
        day = node.dataset.day;
        const separator = document.createElement("li");
        separator.className = "day";
        separator.setAttribute("role", "separator");
        const label = document.createElement("time");
        const date = new Date(node.querySelector("time").dateTime);
        label.dateTime = node.querySelector("time").dateTime.slice(0, 10);
        label.textContent = dayFormat.format(date);
        separator.append(label);
        node.before(separator);
      }
    });
  }

  function messageNodes() {
    return log.querySelectorAll("li.message");
  }

  function oldestId() {
    const first = log.querySelector("li.message");
    return first ? Number(first.dataset.id) : null;
  }

  function newestId() {
    const nodes = messageNodes();
    return nodes.length ? Number(nodes[nodes.length - 1].dataset.id) : null;
  }

  // Messages are kept in id order and each id is shown once: after a reconnect
  // the history overlaps what is already on screen. Returns the new element.
  function addMessage(msg) {
    if (log.querySelector(`li.message[data-id="${Number(msg.id)}"]`)) {
      return null;
    }
    let next = null;
    for (let node = log.lastElementChild; node; node = node.previousElementSibling) {
      if (node.classList.contains("message") && Number(node.dataset.id) < msg.id) {
        break;
      }
      if (!node.classList.contains("start")) {
        next = node;
      }
    }
    const item = renderMessage(msg);
    log.insertBefore(item, next);
    return item;
  }

  // Adds messages; a reader at the bottom stays there. Otherwise older ones
  // (above) keep what the reader looks at in place, and so do newer ones (below).
  function insert(messages, older) {
    const stick = atBottom();
    const fromBottom = log.scrollHeight - log.scrollTop;
    const top = log.scrollTop;
    const added = messages.map(addMessage).filter((item) => item !== null);
    renderDays();
    if (stick) {
      scrollToLatest();
    } else {
      log.scrollTop = older ? log.scrollHeight - fromBottom : top;
    }
    return { added, stick };
  }

  // A message just posted: counted as new if the reader is away or scrolled
  // up, and read out to screen readers (history never is).
  function addLive(msg) {
    const { added, stick } = insert([msg], false);
    if (!added.length) {
      return;
    }
    if (msg.user === me) {
      scrollToLatest();
      return;
    }
    notify(msg);
    if (document.hidden || !stick) {
      markNew(added[0], 1);
    } else {
      log.querySelector("li.new-marker")?.remove();
    }
    announceEl.textContent = format(strings.announce, { user: msg.user, message: msg.message });
  }

  // Unseen messages of others: a marker before the first, a jump button,
  // and a count in the tab's title while the page is hidden.
  function markNew(first, count) {
    if (unread === 0) {
      log.querySelector("li.new-marker")?.remove();
      const marker = document.createElement("li");
      marker.className = "new-marker";
      marker.setAttribute("role", "separator");
      marker.textContent = strings.newMessages;
      first.before(marker);
    }
    unread += count;
    jumpButton.querySelector(".count").textContent = `(${unread})`;
    jumpButton.hidden = atBottom();
    document.title = document.hidden
      ? format(strings.unreadTitle, { count: unread, title: baseTitle })
      : baseTitle;
  }

  function seen() {
    if (document.hidden || !atBottom()) {
      return;
    }
    unread = 0;
    jumpButton.hidden = true;
    document.title = baseTitle;
  }

  function renderStart() {
    if (!log.querySelector("li.start")) {
      const start = document.createElement("li");
      start.className = "start";
      start.textContent = strings.roomStart;
      log.prepend(start);
    }
  }

  function setOlderState(state) {
    olderState = state;
    log.setAttribute("aria-busy", String(state === "loading"));
    log.dataset.older = state;
    if (state === "complete") {
      renderStart();
    }
  }

  function requestOlder(before) {
    setOlderState("loading");
    socket.send(JSON.stringify({ type: "history", before, limit: PAGE_SIZE }));
  }

  // Asks for older messages when the reader nears the top, or when the log is
  // too short to scroll at all.
  function maybeLoadOlder() {
    if (olderState !== "idle" || gapAfter !== null || !connected() || log.scrollTop > LOAD_MARGIN_PX) {
      return;
    }
    const oldest = oldestId();
    if (oldest === null) {
      setOlderState("complete");
      return;
    }
    requestOlder(oldest);
  }

  function onHistory(frame) {
    const first = frame.messages[0];
    if (!("complete" in frame)) {
      // The newest messages, sent on every (re)connect.
      const previousNewest = newestId();
      insert(frame.messages, false);
      clearOutboxEchoes(frame.messages);
      if (previousNewest !== null && first && first.id > previousNewest) {
        // More may have been posted while away than this holds.
        gapAfter = previousNewest;
        requestOlder(first.id);
        return;
      }
      if (!frame.messages.length && olderState === "idle") {
        setOlderState("complete");
      }
      maybeLoadOlder();
      return;
    }
    insert(frame.messages, true);
    clearOutboxEchoes(frame.messages);
    if (gapAfter !== null && first && first.id > gapAfter && !frame.complete) {
      requestOlder(first.id);
      return;
    }
    gapAfter = null;
    setOlderState(frame.complete ? "complete" : "idle");
    maybeLoadOlder();
  }

  // --- Desktop notifications ----------------------------------------------

  function renderNotifyButton() {
    const blocked = Notification.permission === "denied";
    notifyButton.hidden = false;
    notifyButton.disabled = blocked;
    notifyButton.setAttribute("aria-pressed", String(notifying));
    notifyButton.textContent = blocked
      ? strings.notificationsBlocked
      : strings[notifying ? "notificationsOff" : "notificationsOn"];
  }

  // Permission is asked for here only: browsers (and people) refuse a page
  // that asks before anyone showed they want it.
  async function toggleNotifications() {
    if (notifying) {
      notifying = false;
    } else {
      notifying = (await Notification.requestPermission()) === "granted";
    }
    writeStored(localStorage, NOTIFY_KEY, notifying ? "on" : "off");
    renderNotifyButton();
  }

  // Others' messages while the page is hidden; a mention of the reader even
  // while it is shown, since it asks for them by name.
  function notify(msg) {
    if (!notifying || Notification.permission !== "granted") {
      return;
    }
    if (!document.hidden && !MENTION.test(msg.message)) {
      return;
    }
    let body = format(strings.announce, { user: msg.user, message: msg.message });
    if (body.length > NOTIFICATION_BODY_MAX) {
      body = `${body.slice(0, NOTIFICATION_BODY_MAX - 1)}…`;
    }
    const notification = new Notification(roomName, { body });
    notification.addEventListener("click", () => {
      window.focus();
      notification.close();
    });
  }

  function setUpNotifications() {
    if (!("Notification" in window)) {
      return;
    }
    notifying = Notification.permission === "granted" && readStored(localStorage, NOTIFY_KEY) === "on";
    renderNotifyButton();
    notifyButton.addEventListener("click", toggleNotifications);
  }

  // --- Sending: the outbox --------------------------------------------------

  // status: why it waits ("pending", or the server's reason for refusing it).
  function renderPending(entry, status = strings.pending) {
    const item = document.createElement("li");
    item.className = "pending";
    item.dataset.cid = entry.cid;
    const meta = document.createElement("div");
    meta.className = "meta";
    const statusEl = document.createElement("span");
    statusEl.className = "status";
    statusEl.textContent = status;
    meta.append(statusEl);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = entry.text;
    item.append(meta, text);
    return item;
  }

  // A message from the box that waits longer: shown as pending, the box freed.
  function toOutbox(entry) {
    if (!entry.fromInput) {
      return;
    }
    entry.fromInput = false;
    entry.item = renderPending(entry);
    log.append(entry.item);
    input.readOnly = false;
    form.classList.remove("sending");
    clearInput();
  }

  // What a reload must not lose: the outbox with each message's cid (sent
  // again unchanged, the server stores it once), the box's text, and the cid
  // of a refused text in it.
  function saveOutbox() {
    writeStored(sessionStorage, OUTBOX_KEY, JSON.stringify({
      draft: input.readOnly ? "" : input.value,
      refused,
      outbox: outbox.map(({ cid, text }) => ({ cid, text })),
    }));
  }

  function restoreOutbox() {
    let saved = null;
    try {
      saved = JSON.parse(readStored(sessionStorage, OUTBOX_KEY));
    } catch {
      saved = null;
    }
    if (!saved) {
      return;
    }
    input.value = saved.draft || "";
    refused = saved.refused || null;
    for (const { cid, text } of saved.outbox || []) {
      const entry = { cid, text, fromInput: false, sent: false, item: null };
      entry.item = renderPending(entry);
      log.append(entry.item);
      outbox.push(entry);
    }
  }

  // Every change of the outbox ends here, so this is where it is saved.
  function pump() {
    saveOutbox();
    const head = outbox[0];
    if (head && !head.sent && connected() && Date.now() >= holdUntil) {
      head.sent = true;
      socket.send(JSON.stringify({ message: head.text, cid: head.cid }));
    }
  }

  function settle(cid) {
    const index = outbox.findIndex((entry) => entry.cid === cid);
    if (index < 0) {
      return null;
    }
    const [entry] = outbox.splice(index, 1);
    clearTimeout(entry.timer);
    entry.item?.remove();
    if (entry.fromInput) {
      input.readOnly = false;
      form.classList.remove("sending");
    }
    return entry;
  }

  function clearOutboxEchoes(messages) {
    messages.filter((msg) => msg.cid && msg.user === me).forEach((msg) => {
      const entry = settle(msg.cid);
      if (entry?.fromInput) {
        clearInput();
      }
    });
    pump();
  }

  function clearInput() {
    input.value = "";
    refused = null;
    refusalEl.hidden = true;
    updateCounter();
  }

  function onRefused(frame) {
    const entry = settle(frame.cid);
    if (entry === null) {
      showError(frame.error);
      return;
    }
    if (entry.fromInput) {
      refused = { cid: entry.cid, text: entry.text };
      refusalEl.textContent = frame.error;
      refusalEl.hidden = false;
    } else if (REFUSED_FOR_NOW.has(frame.reason)) {
      // Typed while away and refused on the way out for now: first in line
      // again, shown with the reason until it goes through.
      entry.sent = false;
      entry.item = renderPending(entry, frame.error);
      log.append(entry.item);
      outbox.unshift(entry);
      holdUntil = Date.now() + RESEND_AFTER_MS;
      setTimeout(pump, RESEND_AFTER_MS);
    } else {
      // Typed while away and refused for good: it stays where it was, with the reason.
      const item = renderPending(entry, frame.error);
      item.classList.add("refused");
      log.append(item);
    }
    pump();
  }

  function submit() {
    const text = input.value;
    if (!text.trim() || input.readOnly) {
      return;
    }
    const cid = refused && refused.text === text ? refused.cid : newCid();
    refused = null;
    refusalEl.hidden = true;
    const entry = { cid, text, fromInput: true, sent: false, item: null };
    outbox.push(entry);
    if (connected()) {
      // The text stays in the box until its echo arrives.
      entry.timer = setTimeout(() => toOutbox(entry), ECHO_WAIT_MS);
      input.readOnly = true;
      form.classList.add("sending");
    } else {
      toOutbox(entry);
      scrollToLatest();
    }
    pump();
  }

  function updateCounter() {
    const left = maxLength - input.value.length;
    counterEl.hidden = maxLength <= 0 || left > maxLength * COUNTER_FROM;
    counterEl.textContent = format(strings.charactersLeft, { count: left });
    counterEl.classList.toggle("at-limit", left <= 0);
  }

  // --- Connection -----------------------------------------------------------

  function renderPresence(users) {
    presenceEl.replaceChildren(...users.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case "history":
        onHistory(frame);
        break;
      case "message":
        addLive(frame);
        clearOutboxEchoes([frame]);
        break;
      case "presence":
        renderPresence(frame.users);
        break;
      case "error":
        if ("cid" in frame) {
          onRefused(frame);
        } else if ("before" in frame) {
          // Scrolling up asks again.
          gapAfter = null;
          setOlderState("idle");
          showError(frame.error);
        } else {
          showError(frame.error);
        }
        break;
      default:
        break;
    }
  }

  function connect() {
    setState(failures ? "reconnecting" : "connecting");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      failures = 0;
      setState("connected");
      pump();
    });
    socket.addEventListener("message", (event) => handleFrame(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      renderPresence([]);
      // Whatever was on the wire goes again, with its cid, after reconnecting.
      outbox.forEach((entry) => {
        entry.sent = false;
        toOutbox(entry);
      });
      if (olderState === "loading") {
        setOlderState("idle");
      }
      gapAfter = null;
      if (event.code === CLOSE_REVOKED) {
        setState("disconnected");
        setTimeout(() => window.location.reload(), ERROR_DISPLAY_MS / 2);
        return;
      }
      failures += 1;
      // Exponential backoff with jitter, so a restarted server is not stampeded.
      const ceiling = event.code === CLOSE_LIMITED
        ? LIMITED_RETRY_MS
        : Math.min(MAX_BACKOFF_MS, 500 * 2 ** failures);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      setState("reconnecting");
      setTimeout(connect, delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    // isComposing: Enter also confirms a word in Chinese and Japanese input methods.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    if (refused && input.value !== refused.text) {
      refusalEl.hidden = true;
    }
    updateCounter();
    saveOutbox();
  });
  log.addEventListener("scroll", () => {
    maybeLoadOlder();
    seen();
  });
  log.addEventListener("click", (event) => {
    // Touch screens have no hover: a tap on a time shows its full date.
    const time = event.target.closest("li.message time");
    if (time) {
      const full = time.title;
      time.title = time.textContent;
      time.textContent = full;
    }
  });
  jumpButton.addEventListener("click", () => {
    scrollToLatest();
    seen();
    input.focus();
  });
  document.addEventListener("visibilitychange", seen);

  restoreOutbox();
  setUpNotifications();
  updateCounter();
  connect();
})();
