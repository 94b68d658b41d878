// The page of `qatune annotate`: write questions about paragraphs and mark their answers in the
// text. No framework, nothing from another host. User text only ever goes into text nodes.
//
// Offsets: the API speaks Python's string indices (code points); JavaScript strings and the DOM
// count UTF-16 units, where an emoji or any character outside the BMP is two. A selection's DOM
// boundaries become UTF-16 offsets into the context (by walking its text nodes), then code points
// (by counting those of context.slice(0, offset)); gold answers and suggestions go the other way.
"use strict";

(function () {
  const TOP_K = 3;
  const REVIEW_LIMIT = 20;
  const CONFLICT = "The file changed elsewhere: reloaded.";
  const NOT_SAVED = "This change was not saved: check it against the data as it is now, and make it again.";

  const $ = (id) => document.getElementById(id);
  const els = {
    file: $("file"),
    countParagraphs: $("count-paragraphs"),
    countQuestions: $("count-questions"),
    countAnswers: $("count-answers"),
    countUnanswerable: $("count-unanswerable"),
    modelName: $("model-name"),
    undo: $("undo"),
    report: $("report"),
    documents: $("documents"),
    documentsEmpty: $("documents-empty"),
    addDetails: $("add-paragraph"),
    addForm: $("add-paragraph-form"),
    newTitle: $("new-title"),
    newContext: $("new-context"),
    newContextCount: $("new-context-count"),
    titles: $("titles"),
    review: $("review"),
    reviewRefresh: $("review-refresh"),
    reviewStatus: $("review-status"),
    reviewList: $("review-list"),
    notice: $("notice"),
    status: $("status"),
    workEmpty: $("work-empty"),
    workBody: $("work-body"),
    heading: $("paragraph-heading"),
    previous: $("previous-paragraph"),
    next: $("next-paragraph"),
    edit: $("edit-paragraph"),
    composer: $("composer"),
    question: $("question"),
    addAnswer: $("add-answer"),
    unanswerable: $("unanswerable"),
    suggest: $("suggest"),
    selectionInfo: $("selection-info"),
    suggestionsBox: $("suggestions-box"),
    suggestions: $("suggestions"),
    noAnswerProbability: $("no-answer-probability"),
    questionCut: $("question-cut"),
    editor: $("paragraph-editor"),
    paragraphText: $("paragraph-text"),
    saveParagraph: $("save-paragraph"),
    cancelParagraph: $("cancel-paragraph"),
    context: $("context"),
    movedBox: $("moved-box"),
    movedHeading: $("moved-heading"),
    moved: $("moved"),
    legend: $("legend"),
    questionsCount: $("questions-count"),
    questionsEmpty: $("questions-empty"),
    questions: $("questions"),
  };

  const state = {
    data: null, // the last GET /api/data
    version: null,
    paragraphs: [], // [{id: "A/P", article, index, title, paragraph}] in file order
    byId: new Map(),
    paragraph: null, // the selected paragraph's id
    question: null, // the selected question's id
    pending: null, // {start, end}: the span selected in the context, in code points
    suggestions: null, // {paragraph, context, question, answers, noAnswerProbability}
    editing: false, // the paragraph's text
    editingQuestion: null, // the id of the question whose text is being edited
    reviewLoaded: false,
  };
  let shown = null; // what the context element shows: {id, context, offsets}
  let queue = Promise.resolve(); // changes go one at a time, each on the version the last one left

  // --- code points (Python's string indices) and UTF-16 units (JavaScript's) -----------------

  // utf16[k] is the UTF-16 index of the k-th code point of `text`; utf16[n] is text.length.
  // A surrogate pair is one code point; a lone surrogate is one, as Python counts it too.
  function codePointOffsets(text) {
    const utf16 = [];
    let i = 0;
    while (i < text.length) {
      utf16.push(i);
      i += text.codePointAt(i) > 0xffff ? 2 : 1;
    }
    utf16.push(text.length);
    return utf16;
  }

  function countCodePoints(text) {
    let n = 0;
    for (let i = 0; i < text.length; i += text.codePointAt(i) > 0xffff ? 2 : 1) n++;
    return n;
  }

  // [from, to) in UTF-16 units for [start, end) in code points, or null when it does not fit.
  function utf16Span(start, end, offsets) {
    const n = offsets.length - 1;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end) return null;
    return [offsets[start], offsets[end]];
  }

  // A gold answer ({text, answer_start}) as [start, end) in code points.
  function answerSpan(answer) {
    return { start: answer.answer_start, end: answer.answer_start + countCodePoints(answer.text) };
  }

  // The UTF-16 offset, within root's text, of the DOM boundary point (container, offset): the
  // lengths of the text nodes before it, plus the offset into its own text node. A point before
  // root is 0, one after it the text's length.
  function utf16OffsetIn(root, container, offset) {
    const whole = document.createRange();
    whole.selectNodeContents(root);
    const where = whole.comparePoint(container, offset);
    if (where < 0) return 0;
    const point = document.createRange();
    point.setStart(container, offset);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let total = 0;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (where === 0) {
        if (node === container) return total + offset;
        if (point.comparePoint(node, node.length) >= 0) return total; // this node starts after the point
      }
      total += node.length;
    }
    return total;
  }

  // The DOM point (text node, offset) at UTF-16 offset `unit` of root's text.
  function domPointAt(root, unit) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let total = 0;
    let last = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (unit <= total + node.length) return [node, unit - total];
      total += node.length;
      last = node;
    }
    return last ? [last, last.length] : [root, 0];
  }

  // A DOM range within the shown context as {start, end} in code points: its UTF-16 offsets,
  // widened to whole surrogate pairs, without the whitespace at either end; null when empty.
  function spanOfRange(range) {
    const context = shown.context;
    let from = utf16OffsetIn(els.context, range.startContainer, range.startOffset);
    let to = utf16OffsetIn(els.context, range.endContainer, range.endOffset);
    if (from > to) [from, to] = [to, from];
    if (from > 0 && isLowSurrogate(context, from) && isHighSurrogate(context, from - 1)) from--;
    if (to < context.length && isLowSurrogate(context, to) && isHighSurrogate(context, to - 1)) to++;
    while (from < to && /\s/.test(context[from])) from++;
    while (to > from && /\s/.test(context[to - 1])) to--;
    if (from >= to) return null;
    return { start: countCodePoints(context.slice(0, from)), end: countCodePoints(context.slice(0, to)) };
  }

  function isHighSurrogate(text, i) {
    const unit = text.charCodeAt(i);
    return unit >= 0xd800 && unit <= 0xdbff;
  }

  function isLowSurrogate(text, i) {
    const unit = text.charCodeAt(i);
    return unit >= 0xdc00 && unit <= 0xdfff;
  }

  // The text of [start, end) (code points) of the shown context.
  function spanText(span) {
    const utf16 = utf16Span(span.start, span.end, shown.offsets);
    return utf16 ? shown.context.slice(utf16[0], utf16[1]) : "";
  }

  // --- small helpers --------------------------------------------------------------------------

  function percent(probability) {
    const value = 100 * probability;
    if (value > 0 && value < 0.1) return "<0.1%";
    return value.toFixed(1) + "%";
  }

  function quote(text, max = 80) {
    const characters = Array.from(text);
    const short = characters.length > max ? characters.slice(0, max - 1).join("") + "…" : text;
    return "“" + short + "”";
  }

  function plural(n, one, many) {
    return `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // textContent: user text is never markup
    return node;
  }

  function button(className, text, onClick, label) {
    const node = element("button", className, text);
    node.type = "button";
    if (label) node.setAttribute("aria-label", label);
    node.addEventListener("click", onClick);
    return node;
  }

  function showNotice(message) {
    els.notice.textContent = message;
    els.notice.hidden = false;
    els.notice.scrollIntoView({ block: "nearest" });
  }

  function clearNotice() {
    els.notice.textContent = "";
    els.notice.hidden = true;
  }

  function say(message) {
    els.status.textContent = message;
  }

  function isTextField(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    const tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    if (tag !== "input") return false;
    return !["button", "checkbox", "radio", "submit", "reset", "range", "color", "file"].includes(target.type);
  }

  // --- the API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The `detail` of an error response, or a sentence made from its status.
  async function errorDetail(response) {
    let detail = "";
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") detail = body.detail;
      else if (body && Array.isArray(body.detail)) {
        detail = body.detail
          .map((item) => (item && item.msg ? `${(item.loc || []).join(".")}: ${item.msg}` : JSON.stringify(item)))
          .join("; ");
      } else if (body && body.detail !== undefined) detail = JSON.stringify(body.detail);
    } catch (_) {
      /* not JSON: a proxy's page, say */
    }
    return detail || `the server answered ${response.status} ${response.statusText}`.trim();
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "Could not reach the server: " + error.message);
    }
    if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
    try {
      return await response.json();
    } catch (_) {
      throw new ApiError(response.status, `The server's answer to ${method} ${path} was not JSON.`);
    }
  }

  // Run `request` after the changes before it; then reload the data. A 409 reloads too and says
  // so; any other error shows its detail. `failed` puts back what the user typed (a 409 keeps
  // it: the data changed, not their question). `request` gets the version the data had when
  // the user acted: a change built from what they saw (an edit, a delete, an undo) must send
  // it, so that a change made meanwhile (a queued one, another tab's) gives a 409, never a
  // silent overwrite. Additions, which overwrite nothing, send the latest (state.version).
  function change(request, { done, failed } = {}) {
    const seenVersion = state.version;
    const task = async () => {
      clearNotice();
      document.body.classList.add("busy");
      try {
        let body;
        try {
          body = await request(seenVersion);
        } catch (error) {
          if (failed) failed(error);
          if (error.status === 409) {
            // the store's "changed since you read it" names versions: the page says it in its own words
            const stale = error.message.startsWith("the data changed since you read it");
            showNotice(stale ? `${CONFLICT} ${NOT_SAVED}` : `${CONFLICT} ${error.message}`);
            await refresh();
          } else {
            showNotice(error.message);
          }
          return;
        }
        if (body && typeof body.version === "number") state.version = body.version;
        const message = done ? done(body) : "";
        await refresh();
        if (message) say(message);
      } finally {
        document.body.classList.remove("busy");
      }
    };
    queue = queue.then(task, task);
    return queue;
  }

  // --- the data ---------------------------------------------------------------------------------

  async function refresh() {
    let body;
    try {
      body = await api("GET", "api/data");
    } catch (error) {
      showNotice("Could not load the data (GET /api/data): " + error.message);
      return false;
    }
    state.data = body;
    state.version = body.version;
    state.paragraphs = [];
    state.byId = new Map();
    (body.data || []).forEach((article, a) => {
      (article.paragraphs || []).forEach((paragraph, p) => {
        const entry = { id: `${a}/${p}`, article: a, index: p, count: article.paragraphs.length, title: article.title || "", paragraph };
        state.paragraphs.push(entry);
        state.byId.set(entry.id, entry);
      });
    });
    if (!state.byId.has(state.paragraph)) {
      let wanted = "";
      try {
        wanted = decodeURIComponent(location.hash.slice(1));
      } catch (_) {
        wanted = "";  // a malformed link: start at the first paragraph
      }
      state.paragraph = state.byId.has(wanted) ? wanted : state.paragraphs.length ? state.paragraphs[0].id : null;
      state.question = null;
    }
    const current = currentParagraph();
    if (!current || !questionsOf(current).some((qa) => qa.id === state.question)) state.question = null;
    const context = current ? current.paragraph.context : null;
    if (state.suggestions && (state.suggestions.paragraph !== state.paragraph || state.suggestions.context !== context)) {
      state.suggestions = null;
    }
    if (state.pending && (!shown || shown.id !== state.paragraph || shown.context !== context)) state.pending = null;
    render();
    return true;
  }

  function currentParagraph() {
    return state.paragraph === null ? null : state.byId.get(state.paragraph) || null;
  }

  function questionsOf(entry) {
    return (entry && entry.paragraph.qas) || [];
  }

  function currentQuestion() {
    return questionsOf(currentParagraph()).find((qa) => qa.id === state.question) || null;
  }

  // --- rendering --------------------------------------------------------------------------------

  // Everything after a reload of the data; only the paragraph's part (and which paragraph is
  // current in the list) after a choice: the list can be thousands of paragraphs long.
  function render({ documents = true } = {}) {
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    if (documents) {
      renderHeader();
      renderDocuments();
    } else {
      markCurrentParagraph();
    }
    renderWork();
    if (focusKey) {
      const again = document.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function renderHeader() {
    const body = state.data;
    els.file.textContent = body.file || "";
    const counts = body.counts || {};
    els.countParagraphs.textContent = (counts.paragraphs ?? 0).toLocaleString("en");
    els.countQuestions.textContent = (counts.questions ?? 0).toLocaleString("en");
    els.countAnswers.textContent = (counts.answers ?? 0).toLocaleString("en");
    els.countUnanswerable.textContent = (counts.unanswerable ?? 0).toLocaleString("en");
    els.undo.disabled = !body.can_undo;
    els.undo.title = body.can_undo && body.undo ? "Undo: " + body.undo + " (Ctrl+Z)" : "Nothing to undo";
    const line = body.report && body.report.line;
    els.report.hidden = !line;
    els.report.textContent = line ? "Validation: " + line : "";
    const model = body.model;
    els.modelName.hidden = !model;
    const name = model ? String(model.name || "unnamed") : "";
    els.modelName.textContent = model ? "Model: " + (name.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || name) : "";
    els.modelName.title = name;
    els.suggest.hidden = !model;
    els.review.hidden = !model;
    document.title = body.file ? `qatune: annotate ${body.file}` : "qatune: annotate";
  }

  function renderDocuments() {
    const articles = state.data.data || [];
    els.documentsEmpty.hidden = state.paragraphs.length > 0;
    const lists = [];
    articles.forEach((article, a) => {
      const section = element("section", "article");
      section.appendChild(element("h3", "article-title", article.title || "(no title)"));
      const list = element("ol", "paragraph-list");
      (article.paragraphs || []).forEach((paragraph, p) => {
        const id = `${a}/${p}`;
        const item = element("li");
        const choose = button("paragraph-choice", "", () => selectParagraph(id, { focus: false }));
        choose.dataset.paragraph = id;
        choose.dataset.key = "paragraph:" + id;
        if (id === state.paragraph) choose.setAttribute("aria-current", "true");
        const qas = paragraph.qas || [];
        const count = element("span", "q-count" + (qas.length ? "" : " none"), String(qas.length));
        count.title = plural(qas.length, "question", "questions");
        choose.append(
          element("span", "p-number", `¶${p + 1}`),
          element("span", "p-snippet", Array.from(paragraph.context || "").slice(0, 90).join("")),
          count
        );
        item.appendChild(choose);
        list.appendChild(item);
      });
      section.appendChild(list);
      lists.push(section);
    });
    els.documents.replaceChildren(...lists);
    const titles = Array.from(new Set(articles.map((article) => article.title || ""))).filter(Boolean);
    els.titles.replaceChildren(...titles.map((title) => Object.assign(document.createElement("option"), { value: title })));
  }

  function markCurrentParagraph() {
    els.documents.querySelectorAll(".paragraph-choice[aria-current]").forEach((choice) => choice.removeAttribute("aria-current"));
    const chosen = els.documents.querySelector(`[data-paragraph="${CSS.escape(String(state.paragraph))}"]`);
    if (chosen) chosen.setAttribute("aria-current", "true");
  }

  function renderWork() {
    const entry = currentParagraph();
    els.workEmpty.hidden = Boolean(entry);
    els.workBody.hidden = !entry;
    if (!entry) {
      shown = null;
      els.context.replaceChildren();
      return;
    }
    const position = state.paragraphs.indexOf(entry);
    els.heading.textContent = `${entry.title || "(no title)"} · ¶${entry.index + 1} of ${entry.count}`;
    els.previous.disabled = position <= 0;
    els.next.disabled = position >= state.paragraphs.length - 1;
    els.editor.hidden = !state.editing;
    els.context.hidden = state.editing;
    els.composer.hidden = state.editing;
    els.edit.disabled = state.editing;
    renderContext();
    renderSuggestions();
    renderQuestions();
    renderSelectionInfo();
    els.reviewList.querySelectorAll(".review-item").forEach((item) => {
      if (item.dataset.id === state.question) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    });
  }

  // The context as text nodes; the spans to show (gold answers of the selected question, the
  // model's suggestions, the pending selection) cut it into segments, each a <mark> with the
  // classes of the spans covering it.
  function renderContext() {
    const entry = currentParagraph();
    const context = entry.paragraph.context || "";
    const selection = window.getSelection();
    const hadSelection = selection.rangeCount > 0 && els.context.contains(selection.getRangeAt(0).commonAncestorContainer);
    shown = { id: entry.id, context, offsets: codePointOffsets(context) };

    const spans = [];
    const qa = currentQuestion();
    if (qa) {
      (qa.answers || []).forEach((answer, i) => spans.push({ ...answerSpan(answer), kind: "gold", key: `g${i}` }));
    }
    if (state.suggestions) {
      state.suggestions.answers.forEach((answer, i) => spans.push({ start: answer.start, end: answer.end, kind: "suggestion", rank: i + 1 }));
    }
    if (state.pending) spans.push({ ...state.pending, kind: "pending" });
    const placed = [];
    for (const span of spans) {
      const utf16 = utf16Span(span.start, span.end, shown.offsets);
      if (utf16 && utf16[0] < utf16[1]) placed.push({ ...span, from: utf16[0], to: utf16[1] });
    }
    const cuts = new Set([0, context.length]);
    for (const span of placed) {
      cuts.add(span.from);
      cuts.add(span.to);
    }
    const points = Array.from(cuts).sort((x, y) => x - y);
    const nodes = [];
    let firstGold = null;
    for (let i = 0; i + 1 < points.length; i++) {
      const from = points[i];
      const to = points[i + 1];
      const text = context.slice(from, to);
      const covering = placed.filter((span) => span.from <= from && span.to >= to);
      if (!covering.length) {
        nodes.push(document.createTextNode(text));
        continue;
      }
      const mark = element("mark", "", text);
      const golds = covering.filter((span) => span.kind === "gold");
      const suggested = covering.filter((span) => span.kind === "suggestion");
      if (golds.length) mark.classList.add("gold");
      if (golds.length > 1) mark.classList.add("overlap");
      if (suggested.length) {
        mark.classList.add("suggestion");
        suggested.forEach((span) => mark.classList.add("r" + span.rank));
        const starting = suggested.filter((span) => span.from === from).map((span) => span.rank);
        if (starting.length) mark.dataset.rank = starting.join("·");
      }
      if (covering.some((span) => span.kind === "pending")) mark.classList.add("pending");
      if (golds.length && firstGold === null) firstGold = mark;
      nodes.push(mark);
    }
    els.context.replaceChildren(...nodes);
    renderLegend(qa, placed);
    if (hadSelection && state.pending) restoreSelection(state.pending);
    scrollIntoBox(firstGold || els.context.querySelector("mark.suggestion"));
  }

  // What the colours in the context mean, for those it shows.
  function renderLegend(qa, placed) {
    const parts = [];
    const entry = (kind, text) => {
      const item = element("span", "legend-item");
      item.append(element("span", "swatch " + kind), document.createTextNode(text));
      parts.push(item);
    };
    if (placed.some((span) => span.kind === "gold")) entry("gold", `answer to ${quote(qa.question, 70)}`);
    if (placed.some((span) => span.kind === "suggestion")) entry("suggestion", "the model's answers");
    if (placed.some((span) => span.kind === "pending")) entry("pending", "your selection");
    els.legend.replaceChildren(...parts);
    els.legend.hidden = parts.length === 0 || state.editing;
  }

  // Put the browser's selection back on `span` after the context's nodes were replaced (so that
  // Shift+arrows can go on extending it).
  function restoreSelection(span) {
    const utf16 = utf16Span(span.start, span.end, shown.offsets);
    if (!utf16) return;
    const range = document.createRange();
    range.setStart(...domPointAt(els.context, utf16[0]));
    range.setEnd(...domPointAt(els.context, utf16[1]));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Bring a mark into the context box's view without scrolling the page.
  function scrollIntoBox(mark) {
    if (!mark) return;
    const box = els.context; // position: relative, so the mark's offsetTop is within the box
    const top = mark.offsetTop;
    if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - mark.offsetHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }

  function renderSuggestions() {
    const suggestions = state.suggestions;
    els.suggestionsBox.hidden = !suggestions || state.editing;
    if (!suggestions) {
      els.suggestions.replaceChildren();
      return;
    }
    const items = suggestions.answers.map((answer, i) => {
      const item = element("li");
      const choose = button("suggestion-choice", "", () => acceptSuggestion(i), `Save suggestion ${i + 1}: ${answer.text}`);
      choose.dataset.rank = String(i + 1);
      choose.dataset.key = "suggestion:" + i;
      choose.setAttribute("aria-keyshortcuts", String(i + 1));
      choose.append(
        element("kbd", "rank", String(i + 1)),
        element("span", "s-text", answer.text),
        Object.assign(element("span", "score", percent(answer.score)), { title: "the model's probability for this span" })
      );
      choose.addEventListener("mouseenter", () => els.context.classList.add("show-r" + (i + 1)));
      choose.addEventListener("mouseleave", () => els.context.classList.remove("show-r" + (i + 1)));
      item.appendChild(choose);
      return item;
    });
    if (!items.length) items.push(element("li", "hint", "The model finds no answer in this paragraph."));
    els.suggestions.replaceChildren(...items);
    const probability = Number(suggestions.noAnswerProbability);
    els.noAnswerProbability.textContent = Number.isFinite(probability) ? `no answer: ${percent(probability)}` : "";
    // training cuts such a question the same way: worth shortening while it is being written
    const limit = state.data && state.data.model && state.data.model.max_question_length;
    els.questionCut.hidden = !suggestions.questionCut;
    els.questionCut.textContent = Number.isInteger(limit)
      ? `This question is longer than the model reads (${limit} tokens): it answered, and training learns, from its first ${limit} tokens only.`
      : "This question is longer than the model reads: it answered, and training learns, from its first words only.";
  }

  function renderQuestions() {
    // what is typed in a question's text field survives a reload (a 409, say)
    const field = els.questions.querySelector(".question.selected .q-edit");
    const typed = field && !field.closest("form").hidden ? { id: field.dataset.key.slice(5), value: field.value } : null;
    const entry = currentParagraph();
    const qas = questionsOf(entry);
    els.questionsEmpty.hidden = qas.length > 0;
    els.questionsCount.textContent = qas.length ? `(${qas.length})` : "";
    const items = qas.map((qa, i) => {
      const selected = qa.id === state.question;
      const item = element("li", "question" + (selected ? " selected" : ""));
      item.dataset.id = qa.id;
      const main = button("q-main", "", () => selectQuestion(selected ? null : qa.id));
      main.dataset.key = "question:" + qa.id;
      main.setAttribute("aria-pressed", selected ? "true" : "false");
      const answers = element("span", "q-answers");
      if (!(qa.answers || []).length) answers.appendChild(element("span", "badge unanswerable", "unanswerable"));
      for (const answer of qa.answers || []) answers.appendChild(element("span", "chip", answer.text));
      main.append(element("span", "q-number", `${i + 1}.`), element("span", "q-text", qa.question), answers);
      item.appendChild(main);
      if (selected) item.appendChild(questionTools(qa));
      return item;
    });
    els.questions.replaceChildren(...items);
    if (typed && typed.id === state.editingQuestion) {
      const again = els.questions.querySelector(".question.selected .q-edit");
      if (again && again.dataset.key === "edit:" + typed.id) again.value = typed.value;
    }
  }

  // The selected question's editor: its text, its gold answers (each removable), another answer
  // from the selection, delete.
  function questionTools(qa) {
    const tools = element("div", "q-tools");
    const form = element("form", "q-edit-row");
    form.noValidate = true;
    const input = element("input", "q-edit");
    input.type = "text";
    input.value = qa.question;
    input.autocomplete = "off";
    input.setAttribute("aria-label", "The question's text");
    input.dataset.key = "edit:" + qa.id;
    const save = element("button", "small save-question", "Save");
    save.type = "submit";
    const cancel = button("secondary small", "Cancel", () => {
      state.editingQuestion = null;
      renderQuestions();
    });
    form.append(input, save, cancel);
    form.hidden = state.editingQuestion !== qa.id;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveQuestionText(qa.id, input.value);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        state.editingQuestion = null;
        renderQuestions();
        els.questions.querySelector(".question.selected .q-main").focus();
      }
    });
    tools.appendChild(form);

    const golds = element("ul", "gold-list");
    (qa.answers || []).forEach((answer, i) => {
      const span = answerSpan(answer);
      const item = element("li", "gold-item");
      item.append(
        element("span", "chip", answer.text),
        element("span", "hint offsets", `${span.start}–${span.end}`),
        button("remove-answer", "×", () => removeAnswer(qa.id, i), `Remove the answer ${quote(answer.text)}`)
      );
      golds.appendChild(item);
    });
    if (!(qa.answers || []).length) golds.appendChild(element("li", "hint", "No answer: this question is unanswerable."));
    const actions = element("div", "q-actions");
    actions.appendChild(golds);
    const add = button("secondary small add-to-question", "Add selection as answer", () => addSelection({ to: qa.id }));
    add.title = "Select another span of the text, then add it as another gold answer (Enter, with no new question typed)";
    add.disabled = !state.pending;
    add.dataset.key = "add:" + qa.id;
    const edit = button("secondary small edit-question", "Edit", () => {
      state.editingQuestion = qa.id;
      renderQuestions();
      const field = els.questions.querySelector(".question.selected .q-edit");
      field.focus();
      field.select();
    });
    edit.hidden = state.editingQuestion === qa.id;
    actions.append(add, edit, button("danger small delete-question", "Delete", () => deleteQuestion(qa.id), "Delete the question"));
    tools.appendChild(actions);
    return tools;
  }

  function renderSelectionInfo() {
    const add = els.questions.querySelector(".add-to-question");
    if (add) add.disabled = !state.pending;
    if (!state.pending || !shown) {
      els.selectionInfo.textContent = "";
      return;
    }
    const text = spanText(state.pending);
    const target = els.question.value.trim()
      ? "Enter saves it with the new question"
      : state.question
        ? "Enter adds it to the selected question"
        : "type the question, then Enter";
    els.selectionInfo.textContent = `Selected ${quote(text, 50)} (${state.pending.start}–${state.pending.end}): ${target}`;
  }

  // --- choosing ---------------------------------------------------------------------------------

  function selectParagraph(id, { focus = true } = {}) {
    if (!state.byId.has(id)) return;
    if (id !== state.paragraph) {
      state.paragraph = id;
      state.question = null;
      state.pending = null;
      state.suggestions = null;
      state.editing = false;
      els.movedBox.hidden = true;
      history.replaceState(null, "", "#" + id);
    }
    render({ documents: false });
    if (focus) els.question.focus({ preventScroll: true });
    const chosen = els.documents.querySelector(`[data-paragraph="${CSS.escape(id)}"]`);
    if (chosen) chosen.scrollIntoView({ block: "nearest" });
    if (window.matchMedia("(max-width: 899px)").matches) $("work").scrollIntoView({ block: "start" });
  }

  function selectQuestion(id) {
    state.question = id;
    state.editingQuestion = null;
    render({ documents: false });
  }

  function step(delta) {
    const position = state.paragraphs.findIndex((entry) => entry.id === state.paragraph);
    const next = state.paragraphs[position + delta];
    if (next) selectParagraph(next.id, { focus: false });
  }

  function setPending(span) {
    const same = state.pending && span && state.pending.start === span.start && state.pending.end === span.end;
    state.pending = span;
    if (!same) renderSelectionInfo();
  }

  // The pending span is dropped; marks showing it lose their look without their nodes being
  // replaced (a drag may be starting on them).
  function dropPending() {
    state.pending = null;
    els.context.querySelectorAll("mark.pending").forEach((mark) => mark.classList.remove("pending"));
    renderSelectionInfo();
  }

  function onSelectionChange() {
    if (!shown || state.editing) return;
    const selection = window.getSelection();
    if (!selection.rangeCount) return;
    const range = selection.getRangeAt(0);
    const startsIn = els.context.contains(range.startContainer);
    const endsIn = els.context.contains(range.endContainer);
    if (startsIn || endsIn) {
      if (range.collapsed) {
        if (state.pending) dropPending();
        return;
      }
      setPending(spanOfRange(range)); // a drag past either end of the box is cut at the text's ends
      return;
    }
    // The selection went elsewhere (the question field, say): show the pending span as a mark.
    if (state.pending && !els.context.querySelector("mark.pending")) renderContext();
  }

  // --- changes ----------------------------------------------------------------------------------

  // Save the selected span: with the typed question as a new question, or (`to`, or with no
  // question typed) as another gold answer of the selected question.
  function addSelection({ to = null } = {}) {
    clearNotice();
    onSelectionChange(); // selectionchange comes later than the keys and the mouse: read it now
    const span = state.pending;
    const entry = currentParagraph();
    if (!entry) return;
    if (!span) {
      showNotice("Select the answer in the text first: drag over it with the mouse, or use Shift+arrows in the text.");
      return;
    }
    const typed = els.question.value;
    if (to === null && typed.trim()) {
      createQuestion(entry.id, typed, [span]);
      return;
    }
    const target = to || state.question;
    const qa = questionsOf(entry).find((item) => item.id === target);
    if (!qa) {
      showNotice("Type the question first, then press Enter to save it with the selected answer.");
      els.question.focus();
      return;
    }
    const answers = (qa.answers || []).map(answerSpan);
    if (answers.some((answer) => answer.start === span.start && answer.end === span.end)) {
      showNotice("That answer is already there.");
      return;
    }
    const text = spanText(span);
    clearSelection();
    change(
      (seen) => api("PUT", `api/questions?id=${encodeURIComponent(qa.id)}`, { question: qa.question, answers: [...answers, span], version: seen }),
      {
        done: () => `Added the answer ${quote(text)} to ${quote(qa.question, 60)}.`,
        failed: () => restorePending(entry.id, span),
      }
    );
  }

  // A new question with `answers` (spans; none: unanswerable). What was typed is cleared at once
  // (a second Enter does not save it twice) and put back if the save fails.
  function createQuestion(paragraphId, question, answers, how = "") {
    const pending = state.pending;
    const suggestions = state.suggestions;
    const texts = answers.map((span) => spanText(span));
    els.question.value = "";
    clearSelection();
    state.suggestions = null;
    renderSuggestions();
    renderSelectionInfo();
    return change(
      () => api("POST", "api/questions", { paragraph: paragraphId, question, answers, version: state.version }),
      {
        done: (body) => {
          if (state.paragraph === paragraphId) state.question = body.id;
          els.question.focus({ preventScroll: true });
          if (!answers.length) return `Saved ${quote(question, 60)} as unanswerable.`;
          return `Saved ${quote(question, 60)} with the answer ${quote(texts[0])}${how}.`;
        },
        failed: () => {
          if (!els.question.value) els.question.value = question;
          if (!state.suggestions && state.paragraph === paragraphId) state.suggestions = suggestions;
          restorePending(paragraphId, pending);
        },
      }
    );
  }

  function restorePending(paragraphId, span) {
    if (span && state.paragraph === paragraphId) {
      state.pending = span;
      if (shown && shown.id === paragraphId) renderContext();
      renderSelectionInfo();
    }
  }

  function clearSelection() {
    const selection = window.getSelection();
    if (selection.rangeCount && els.context.contains(selection.getRangeAt(0).commonAncestorContainer)) selection.removeAllRanges();
    state.pending = null;
    if (shown) renderContext();
  }

  function saveUnanswerable() {
    clearNotice();
    const entry = currentParagraph();
    if (!entry) return;
    const typed = els.question.value;
    if (!typed.trim()) {
      showNotice("Type the question first: Unanswerable saves it with no answer.");
      els.question.focus();
      return;
    }
    createQuestion(entry.id, typed, []);
  }

  function saveQuestionText(id, text) {
    clearNotice();
    const qa = questionsOf(currentParagraph()).find((item) => item.id === id);
    if (!qa) return;
    if (!text.trim()) {
      showNotice("A question cannot be empty: delete it instead.");
      return;
    }
    if (text === qa.question) {
      state.editingQuestion = null;
      renderQuestions();
      return;
    }
    change(
      (seen) => api("PUT", `api/questions?id=${encodeURIComponent(id)}`, { question: text, answers: (qa.answers || []).map(answerSpan), version: seen }),
      {
        done: () => {
          state.editingQuestion = null;
          return `Saved the question ${quote(text, 60)}.`;
        },
      }
    );
  }

  function removeAnswer(id, index) {
    clearNotice();
    const qa = questionsOf(currentParagraph()).find((item) => item.id === id);
    if (!qa) return;
    const answers = (qa.answers || []).map(answerSpan);
    const [removed] = (qa.answers || []).slice(index, index + 1);
    answers.splice(index, 1);
    change(
      (seen) => api("PUT", `api/questions?id=${encodeURIComponent(id)}`, { question: qa.question, answers, version: seen }),
      {
        done: () =>
          `Removed the answer ${quote(removed ? removed.text : "")}` + (answers.length ? "." : ": the question is now unanswerable."),
      }
    );
  }

  function deleteQuestion(id) {
    clearNotice();
    const qa = questionsOf(currentParagraph()).find((item) => item.id === id);
    if (!qa) return;
    change((seen) => api("DELETE", `api/questions?id=${encodeURIComponent(id)}&version=${seen}`), {
      done: () => {
        if (state.question === id) state.question = null;
        return `Deleted ${quote(qa.question, 60)}. Undo brings it back (Ctrl+Z).`;
      },
    });
  }

  function undo() {
    if (els.undo.disabled) return;
    clearNotice();
    change((seen) => api("POST", "api/undo", { version: seen }), {
      done: (body) => "Undone: " + (body.undone || "the last change") + ".",
    });
  }

  function addParagraph(event) {
    event.preventDefault();
    clearNotice();
    const title = els.newTitle.value.trim();
    const context = els.newContext.value;
    if (!context.trim()) {
      showNotice("Paste the paragraph's text first.");
      els.newContext.focus();
      return;
    }
    change(() => api("POST", "api/paragraphs", { title, context, version: state.version }), {
      done: (body) => {
        els.newContext.value = ""; // the title stays: the next paragraph often goes to the same article
        updateNewCount();
        state.paragraph = body.paragraph;
        state.question = null;
        state.pending = null;
        state.suggestions = null;
        state.editing = false;
        els.movedBox.hidden = true;
        history.replaceState(null, "", "#" + body.paragraph);
        setTimeout(() => {
          els.question.focus({ preventScroll: true });
          $("work").scrollIntoView({ block: "nearest" });
        });
        return `Added a paragraph to ${quote(title || "(no title)", 60)}: type its first question.`;
      },
    });
  }

  function startEditing() {
    const entry = currentParagraph();
    if (!entry) return;
    state.editing = true;
    state.editingFrom = entry.paragraph.context;  // the text the edit starts from
    state.pending = null;
    state.suggestions = null;
    els.paragraphText.value = entry.paragraph.context;
    els.movedBox.hidden = true;
    renderWork();
    els.paragraphText.focus();
  }

  function stopEditing() {
    state.editing = false;
    renderWork();
  }

  function saveParagraph() {
    clearNotice();
    const entry = currentParagraph();
    if (!entry) return;
    const typed = els.paragraphText.value;
    const from = state.editingFrom;
    // a textarea gives "\n" for every line end, whatever the paragraph has
    if (typed === from.replace(/\r\n?/g, "\n")) {
      stopEditing();
      return;
    }
    const context = withLineEnds(typed, from);
    const [a, p] = entry.id.split("/");
    // Checked when its turn comes (after any reload before it): while the paragraph is still the
    // text the edit began from, the data's latest version is the one to send, since changes
    // elsewhere in the file (another tab's) do not touch this edit; once it changed elsewhere,
    // saving would undo that change without a word.
    const save = () => {
      const now = state.byId.get(entry.id);
      if (!now || now.paragraph.context !== from) {
        return Promise.reject(new ApiError(0, "This paragraph's text was changed elsewhere while you edited it: copy your text, press Cancel, and edit the new text."));
      }
      return api("PUT", `api/paragraphs/${a}/${p}`, { context, version: state.version });
    };
    change(save, {
      done: (body) => {
        state.editing = false;
        showMoved(body.moved || []);
        return "Saved the paragraph's text.";
      },
    });
  }

  // The k-th line end of `typed` (a textarea's "\n") becomes the k-th of `original` ("\r\n", "\r"
  // or "\n"): an edit keeps the paragraph's own line ends; new lines take its last kind.
  function withLineEnds(typed, original) {
    const ends = original.match(/\r\n|\r|\n/g) || [];
    let k = 0;
    return typed.replace(/\n/g, () => ends[Math.min(k++, ends.length - 1)] || "\n");
  }

  function showMoved(moved) {
    els.movedBox.hidden = false;
    els.movedHeading.textContent = moved.length
      ? `${plural(moved.length, "answer", "answers")} moved with the text:`
      : "No answer had to move.";
    const questions = questionsOf(currentParagraph());
    els.moved.replaceChildren(
      ...moved.map((item) => {
        const qa = questions.find((candidate) => String(candidate.id) === String(item.id));
        const of = qa ? `answer to ${quote(qa.question, 60)}` : `question ${item.id}`; // ids only if the question is gone
        return element("li", "", `${quote(item.text, 60)} (${of}): ${item.from[0]}–${item.from[1]} → ${item.to[0]}–${item.to[1]}`);
      })
    );
  }

  // --- the model ----------------------------------------------------------------------------------

  function suggest() {
    clearNotice();
    const entry = currentParagraph();
    if (!entry || !state.data.model) return;
    const question = els.question.value;
    if (!question.trim()) {
      showNotice("Type the question first: the model suggests its answers.");
      els.question.focus();
      return;
    }
    const context = entry.paragraph.context;
    const task = async () => {
      els.suggest.disabled = true;
      els.suggest.setAttribute("aria-busy", "true");
      say("Asking the model…");
      try {
        const body = await api("POST", "api/suggest", { paragraph: entry.id, question, top_k: TOP_K });
        if (state.paragraph !== entry.id || currentParagraph().paragraph.context !== context) return;
        state.suggestions = {
          paragraph: entry.id,
          context,
          question,
          answers: Array.isArray(body.answers) ? body.answers.slice(0, TOP_K) : [],
          noAnswerProbability: body.no_answer_probability,
          questionCut: body.question_cut === true,
        };
        renderContext();
        renderSuggestions();
        say("");
        els.suggestionsBox.focus({ preventScroll: true });
        els.suggestionsBox.scrollIntoView({ block: "nearest" });
      } catch (error) {
        say("");
        showNotice(error.message);
      } finally {
        els.suggest.disabled = false;
        els.suggest.setAttribute("aria-busy", "false");
      }
    };
    queue = queue.then(task, task);
  }

  function acceptSuggestion(index) {
    clearNotice();
    const suggestions = state.suggestions;
    const entry = currentParagraph();
    if (!suggestions || !entry || suggestions.paragraph !== entry.id) return;
    const answer = suggestions.answers[index];
    if (!answer) return;
    const question = els.question.value.trim() ? els.question.value : suggestions.question;
    state.pending = null;
    createQuestion(entry.id, question, [{ start: answer.start, end: answer.end }], ` (suggestion ${index + 1})`);
  }

  async function loadReview() {
    if (!state.data || !state.data.model) return;
    els.reviewStatus.textContent = "The model is reading every question…";
    els.reviewRefresh.disabled = true;
    try {
      const body = await api("GET", `api/review?limit=${REVIEW_LIMIT}`);
      const items = Array.isArray(body.items) ? body.items : [];
      state.reviewLoaded = true;
      els.reviewStatus.textContent = items.length ? "" : "Nothing to review: the model agrees with every answer.";
      els.reviewList.replaceChildren(...items.map(reviewItem));
    } catch (error) {
      els.reviewStatus.textContent = "";
      showNotice("Could not review (GET /api/review): " + error.message);
    } finally {
      els.reviewRefresh.disabled = false;
    }
  }

  function reviewItem(item) {
    const li = element("li");
    const go = button("review-item", "", () => {
      selectParagraph(item.paragraph, { focus: false });
      selectQuestion(item.id);
      const card = els.questions.querySelector(`li[data-id="${CSS.escape(item.id)}"]`);
      if (card) card.scrollIntoView({ block: "nearest" });
    });
    go.dataset.id = item.id;
    if (item.id === state.question) go.setAttribute("aria-current", "true");
    const gold = (item.gold || []).map((answer) => quote(answer.text, 40)).join(" or ") || "unanswerable";
    const predicted = item.predicted ? `${quote(item.predicted.text, 40)} (${percent(item.predicted.score)})` : "no answer";
    const reason = element("span", "badge " + (item.reason === "disagrees" ? "disagrees" : "unsure"), item.reason);
    const line = element("span", "review-answers");
    line.append(element("span", "review-gold", "gold " + gold), element("span", "review-predicted", "model " + predicted));
    go.append(reason, element("span", "review-question", item.question), line);
    li.appendChild(go);
    return li;
  }

  // --- wiring -----------------------------------------------------------------------------------

  function updateNewCount() {
    const n = countCodePoints(els.newContext.value);
    els.newContextCount.textContent = n ? plural(n, "character", "characters") : "";
  }

  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    addSelection();
  });
  els.question.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.isComposing || event.shiftKey) return;
    event.preventDefault();
    onSelectionChange();
    if (state.pending) addSelection();
    else if (state.data && state.data.model) suggest();
    else if (els.question.value.trim()) showNotice("Now select the answer in the text (or press Unanswerable).");
  });
  els.question.addEventListener("input", renderSelectionInfo);
  els.unanswerable.addEventListener("click", saveUnanswerable);
  els.suggest.addEventListener("click", suggest);
  els.undo.addEventListener("click", undo);
  els.addForm.addEventListener("submit", addParagraph);
  els.newContext.addEventListener("input", updateNewCount);
  els.previous.addEventListener("click", () => step(-1));
  els.next.addEventListener("click", () => step(1));
  els.edit.addEventListener("click", startEditing);
  els.cancelParagraph.addEventListener("click", stopEditing);
  els.saveParagraph.addEventListener("click", saveParagraph);
  els.reviewRefresh.addEventListener("click", loadReview);
  els.review.addEventListener("toggle", () => {
    if (els.review.open && !state.reviewLoaded) loadReview();
  });

  document.addEventListener("selectionchange", onSelectionChange);
  els.context.addEventListener("mousedown", (event) => {
    if (event.button === 0 && !event.shiftKey && state.pending) dropPending();
  });
  // Shift+arrows select from the keyboard. Chromium extends a selection of text that is not
  // editable, but not a bare caret (where a click leaves one): the page extends it then.
  const EXTEND = {
    ArrowLeft: ["backward", "character"],
    ArrowRight: ["forward", "character"],
    ArrowUp: ["backward", "line"],
    ArrowDown: ["forward", "line"],
    Home: ["backward", "lineboundary"],
    End: ["forward", "lineboundary"],
  };
  els.context.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      addSelection();
      return;
    }
    const extend = EXTEND[event.key];
    if (!extend || !event.shiftKey || event.altKey || event.metaKey) return;
    const selection = window.getSelection();
    const inside = selection.rangeCount > 0 && els.context.contains(selection.anchorNode);
    if (inside && !selection.isCollapsed) return; // the browser's own
    event.preventDefault();
    if (!inside) selection.collapse(...domPointAt(els.context, 0));
    const [direction, unit] = extend;
    selection.modify("extend", direction, event.ctrlKey && unit === "character" ? "word" : unit);
  });

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    const inField = isTextField(event.target);
    const modifier = event.ctrlKey || event.metaKey;
    if (modifier && !event.shiftKey && !event.altKey && event.key.toLowerCase() === "z" && !inField) {
      event.preventDefault();
      undo();
      return;
    }
    if (event.key === "Escape") {
      if (state.pending) {
        window.getSelection().removeAllRanges();
        dropPending();
      } else if (state.suggestions) {
        state.suggestions = null;
        renderContext();
        renderSuggestions();
      }
      return;
    }
    if (inField || modifier || event.altKey) return;
    if (["1", "2", "3"].includes(event.key) && state.suggestions) {
      event.preventDefault();
      acceptSuggestion(Number(event.key) - 1);
    } else if (event.key === "/") {
      event.preventDefault();
      els.question.focus();
    }
  });

  refresh().then((ok) => {
    if (ok && !state.paragraphs.length) els.addDetails.open = true;
  });

  // for tests and the curious: the conversions the page uses
  window.qatuneAnnotate = { codePointOffsets, countCodePoints, utf16OffsetIn };
})();
