"use strict";

// Chat room client. Everything from the server is inserted with textContent:
// message text is user input and must never be parsed as HTML.
(() => {
  const MAX_BACKOFF_MS = 10000;
  const ERROR_DISPLAY_MS = 6000;
  // Close codes the server explains in an error frame just before closing.
  // The session or account ended: a reload shows the login page (or, after a
  // password change in this browser, the room again).
  const CLOSE_REVOKED = 4001;
  // The account has too many sockets or rooms open: retry, but slowly.
  const CLOSE_LIMITED = 4029;
  const LIMITED_RETRY_MS = 30000;

  const roomName = JSON.parse(document.getElementById("room-name").textContent);
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-message-input");
  const stateEl = document.getElementById("connection-state");
  const presenceEl = document.getElementById("presence");
  const errorEl = document.getElementById("chat-error");
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${window.location.host}/ws/chat/${encodeURIComponent(roomName)}/`;
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  let socket = null;
  let failures = 0;
  let errorTimer = null;

  function setState(state, label) {
    stateEl.dataset.state = state;
    stateEl.textContent = label;
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { errorEl.hidden = true; }, ERROR_DISPLAY_MS);
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function renderMessage(msg) {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(msg.id);
    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = msg.user;
    const time = document.createElement("time");
    time.dateTime = msg.ts;
    time.textContent = timeFormat.format(new Date(msg.ts));
    time.title = new Date(msg.ts).toLocaleString();
    meta.append(author, " ", time);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = msg.message;
    item.append(meta, text);
    return item;
  }

  // Messages are kept in id order and each id is shown once: after a reconnect
  // the history overlaps what is already on screen.
  function addMessage(msg) {
    if (log.querySelector(`[data-id="${Number(msg.id)}"]`)) {
      return;
    }
    let next = null;
    for (let node = log.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.id) < msg.id) {
        break;
      }
      next = node;
    }
    log.insertBefore(renderMessage(msg), next);
  }

  function addMessages(messages) {
    const stick = nearBottom();
    messages.forEach(addMessage);
    if (stick) {
      log.scrollTop = log.scrollHeight;
    }
  }

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
        addMessages(frame.messages);
        break;
      case "message":
        addMessages([frame]);
        break;
      case "presence":
        renderPresence(frame.users);
        break;
      case "error":
        showError(frame.error);
        break;
      default:
        break;
    }
  }

  function connect() {
    setState(failures ? "reconnecting" : "connecting", failures ? "reconnecting…" : "connecting…");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      failures = 0;
      setState("connected", "connected");
    });
    socket.addEventListener("message", (event) => handleFrame(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      renderPresence([]);
      if (event.code === CLOSE_REVOKED) {
        setState("closed", "disconnected");
        setTimeout(() => window.location.reload(), ERROR_DISPLAY_MS / 2);
        return;
      }
      failures += 1;
      // Exponential backoff with jitter, so a restarted server is not stampeded.
      const ceiling = event.code === CLOSE_LIMITED
        ? LIMITED_RETRY_MS
        : Math.min(MAX_BACKOFF_MS, 500 * 2 ** failures);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      setState("reconnecting", "reconnecting…");
      setTimeout(connect, delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) {
      return;
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected; your message was not sent.");
      return;
    }
    socket.send(JSON.stringify({ message: text }));
    input.value = "";
    input.focus();
  });

  connect();
})();
