// The page at `/`: ask the server's model a question about a context, show the answers.
// No framework, nothing from another host. User text only ever goes into text nodes.
"use strict";

(function () {
  const KEY_STORAGE = "qatune.apiKey";
  const MAX_TOP_K_SHOWN = 5;
  const LOADING = "The model is loading…";

  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("ask-form"),
    keyField: $("key-field"),
    key: $("api-key"),
    sample: $("sample"),
    context: $("context"),
    contextCount: $("context-count"),
    question: $("question"),
    topK: $("top-k"),
    ask: $("ask"),
    status: $("status"),
    error: $("error"),
    modelName: $("model-name"),
    engine: $("engine"),
    devScores: $("dev-scores"),
    resultEmpty: $("result-empty"),
    resultBody: $("result-body"),
    answerText: $("answer-text"),
    answerScore: $("answer-score"),
    noAnswer: $("no-answer"),
    noAnswerProbability: $("no-answer-probability"),
    questionCut: $("question-cut"),
    offsetWarning: $("offset-warning"),
    answers: $("answers"),
    rendered: $("rendered-context"),
  };

  let samples = [];
  let maxContextCharacters = null;
  let maxQuestionTokens = null; // the model's max_question_length: longer questions are cut
  let busy = false;
  let asked = 0; // numbers the requests: only the latest one's answer is shown
  let shown = null; // {context, offsets, answers, selected}

  // --- code points (Python's string indices) to UTF-16 indices (JavaScript's) ---------------

  // utf16[k] is the UTF-16 index of the k-th code point of `text`; utf16[n] is text.length.
  // A surrogate pair is one code point (two UTF-16 units); a lone surrogate is one of each,
  // as Python counts it too.
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

  // [from, to) in UTF-16 units for the answer's [start, end) in code points, or null when the
  // offsets do not fit the context.
  function spanOf(answer, offsets) {
    const n = offsets.length - 1;
    const { start, end } = answer;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end) return null;
    return [offsets[start], offsets[end]];
  }

  // --- small helpers ------------------------------------------------------------------------

  function percent(probability) {
    const value = 100 * probability;
    if (value > 0 && value < 0.1) return "<0.1%";
    return value.toFixed(1) + "%";
  }

  function setText(element, text) {
    element.textContent = text;
  }

  function showError(message) {
    setText(els.error, message);
    els.error.hidden = false;
    els.error.scrollIntoView({ block: "nearest" });
  }

  function clearError() {
    setText(els.error, "");
    els.error.hidden = true;
  }

  function setBusy(on) {
    busy = on;
    els.ask.disabled = on;
    els.ask.setAttribute("aria-busy", on ? "true" : "false");
    setText(els.ask, on ? "Asking…" : "Ask");
    els.form.classList.toggle("busy", on);
  }

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (_) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
      else window.sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      /* storage refused (private mode): the key still works for this page */
    }
  }

  function showKeyField() {
    els.keyField.hidden = false;
    if (!els.key.value) els.key.value = storedKey();
  }

  // The `detail` sentence of an error response, or a sentence made from the status.
  async function errorDetail(response) {
    let detail = "";
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") detail = body.detail;
      else if (body && body.detail !== undefined) detail = JSON.stringify(body.detail);
    } catch (_) {
      /* not JSON: a proxy's page, say */
    }
    if (!detail) detail = `the server answered ${response.status} ${response.statusText}`.trim();
    if (response.status === 401) detail += ". Enter the API key in the field above.";
    if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      if (retry) detail += ` (retry after ${retry} s)`;
    }
    return detail;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(await errorDetail(response));
    return response.json();
  }

  // --- the model and the samples -------------------------------------------------------------

  function describeModel(model) {
    setText(els.modelName, model.name || "unnamed");
    if (model.base_model) els.modelName.title = "base model: " + model.base_model;
    if (!model.ready) {
      setText(els.engine, "loading…");
    } else {
      setText(els.engine, (model.engine && model.engine.description) || "unknown");
    }
    const dev = model.dev_metrics;
    // data with unanswerable questions is scored with the SQuAD 2.0 keys ("exact"), other data with v1.1's
    const exact = dev ? (typeof dev.exact_match === "number" ? dev.exact_match : dev.exact) : undefined;
    if (dev && typeof exact === "number" && typeof dev.f1 === "number") {
      let text = `EM ${exact.toFixed(1)} · F1 ${dev.f1.toFixed(1)}`;
      if (model.best_epoch !== null && model.best_epoch !== undefined) text += ` (epoch ${model.best_epoch})`;
      setText(els.devScores, text);
    } else {
      setText(els.devScores, "no dev scores");
    }
    const settings = model.settings || {};
    maxQuestionTokens = Number.isInteger(settings.max_question_length) ? settings.max_question_length : null;
    const limits = model.limits || {};
    maxContextCharacters = limits.max_context_characters || null;
    const maxTopK = Math.min(MAX_TOP_K_SHOWN, limits.max_top_k || MAX_TOP_K_SHOWN);
    for (const option of Array.from(els.topK.options)) {
      if (Number(option.value) > maxTopK) option.remove();
    }
    if (model.api_key_required) showKeyField();
    updateCount();
  }

  async function loadModel() {
    for (;;) {
      let model;
      try {
        model = await getJSON("v1/model");
      } catch (error) {
        showError("Could not read the model's description (/v1/model): " + error.message);
        return;
      }
      describeModel(model);
      if (model.ready) {
        if (els.status.textContent === LOADING) setText(els.status, "");
        return;
      }
      setText(els.status, LOADING);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  async function loadSamples() {
    let body;
    try {
      body = await getJSON("v1/examples");
    } catch (error) {
      showError("Could not load the sample contexts (/v1/examples): " + error.message);
      return;
    }
    samples = Array.isArray(body.examples) ? body.examples : [];
    samples.forEach((sample, index) => {
      const option = document.createElement("option");
      option.value = String(index);
      const title = sample.title ? sample.title + ": " : "";
      option.textContent = title + sample.question; // textContent: sample text is never markup
      els.sample.appendChild(option);
    });
  }

  function pickSample() {
    const sample = samples[Number(els.sample.value)];
    if (els.sample.value === "" || !sample) return;
    els.context.value = sample.context;
    els.question.value = sample.question;
    updateCount();
    clearError();
    els.question.focus();
  }

  function updateCount() {
    const n = countCodePoints(els.context.value);
    let text = n === 1 ? "1 character" : `${n.toLocaleString("en")} characters`;
    if (maxContextCharacters) text += ` of at most ${maxContextCharacters.toLocaleString("en")}`;
    setText(els.contextCount, n ? text : "");
    els.contextCount.classList.toggle("over", Boolean(maxContextCharacters && n > maxContextCharacters));
  }

  // --- asking ----------------------------------------------------------------------------------

  async function ask(event) {
    if (event) event.preventDefault();
    if (busy) return;
    clearError();
    const context = els.context.value;
    const question = els.question.value;
    const topK = Number(els.topK.value) || 1;
    if (!context.trim()) {
      showError("Paste a context first (or pick a sample): the answer is a span of it.");
      els.context.focus();
      return;
    }
    if (!question.trim()) {
      showError("Type a question about the context.");
      els.question.focus();
      return;
    }
    const characters = countCodePoints(context);
    if (maxContextCharacters && characters > maxContextCharacters) {
      // the server would refuse it (413): say so in the page's words, without asking
      showError(
        `The context has ${characters.toLocaleString("en")} characters; this server reads at most ` +
          `${maxContextCharacters.toLocaleString("en")}. Keep the part that holds the answer and ask again.`
      );
      els.context.focus();
      return;
    }
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const key = els.key.value;
    if (/[^\x20-\x7e]/.test(key)) {
      // fetch refuses such a header outright; say so rather than "could not reach the server"
      showError("The API key may hold only printable ASCII characters: check what was pasted.");
      els.key.focus();
      return;
    }
    if (key) headers.Authorization = "Bearer " + key;

    const number = ++asked;
    setBusy(true);
    setText(els.status, "Asking…");
    const started = performance.now();
    try {
      let response;
      try {
        response = await fetch("v1/answer", {
          method: "POST",
          headers,
          body: JSON.stringify({ question, context, top_k: topK }),
          cache: "no-store",
        });
      } catch (error) {
        throw new Error("Could not reach the server: " + error.message);
      }
      if (number !== asked) return;
      if (!response.ok) {
        if (response.status === 401) showKeyField();
        throw new Error(await errorDetail(response));
      }
      let body;
      try {
        body = await response.json();
      } catch (_) {
        throw new Error("The server's answer was not JSON.");
      }
      if (!body || !Array.isArray(body.answers)) throw new Error("The server's answer has no 'answers' list.");
      const milliseconds = Math.round(performance.now() - started);
      showResult(context, body);
      setText(els.status, `Answered in ${milliseconds} ms.`);
      revealResult();
    } catch (error) {
      if (number !== asked) return;
      setText(els.status, "");
      clearResult(); // an answer still shown would seem to answer this question
      showError(error.message);
    } finally {
      if (number === asked) setBusy(false);
    }
  }

  function clearResult() {
    shown = null;
    els.resultBody.hidden = true;
    els.resultEmpty.hidden = false;
    els.answers.replaceChildren();
    els.rendered.replaceChildren();
  }

  function showResult(context, body) {
    shown = { context, offsets: codePointOffsets(context), answers: body.answers, selected: 0 };
    els.resultEmpty.hidden = true;
    els.resultBody.hidden = false;
    const probability = Number(body.no_answer_probability);
    setText(
      els.noAnswerProbability,
      Number.isFinite(probability) ? `No-answer probability: ${percent(probability)}` : ""
    );
    els.questionCut.hidden = body.question_cut !== true;
    setText(
      els.questionCut,
      maxQuestionTokens === null
        ? "The question is longer than the model reads: it was answered from its first words."
        : `The question is longer than the model reads (${maxQuestionTokens} tokens): ` +
            `it was answered from its first ${maxQuestionTokens} tokens.`
    );
    els.answers.replaceChildren();
    if (body.answers.length === 0) {
      els.noAnswer.hidden = false;
      els.answerText.hidden = true;
      els.answerScore.hidden = true;
      els.answers.hidden = true;
      $("answers-heading").hidden = true;
      els.offsetWarning.hidden = true;
      renderContext(null);
      return;
    }
    els.noAnswer.hidden = true;
    els.answerText.hidden = false;
    els.answerScore.hidden = false;
    els.answers.hidden = false;
    $("answers-heading").hidden = false;
    body.answers.forEach((answer, index) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "answer-choice";
      const text = document.createElement("span");
      text.className = "choice-text";
      text.textContent = answer.text;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = percent(answer.score);
      score.title = "the model's probability for this span";
      button.append(text, score);
      button.addEventListener("click", () => select(index));
      item.appendChild(button);
      els.answers.appendChild(item);
    });
    select(0);
  }

  // On one column (a phone) the answer is below the form: bring it up once it is there.
  function revealResult() {
    const result = $("result");
    if (result.getBoundingClientRect().top > window.innerHeight * 0.6) {
      result.scrollIntoView({ block: "start" });
    }
  }

  function select(index) {
    if (!shown) return;
    shown.selected = index;
    const answer = shown.answers[index];
    Array.from(els.answers.children).forEach((item, i) => {
      item.classList.toggle("selected", i === index);
      const button = item.firstElementChild;
      button.setAttribute("aria-pressed", i === index ? "true" : "false");
    });
    setText(els.answerText, answer.text);
    setText(els.answerScore, percent(answer.score));
    const span = spanOf(answer, shown.offsets);
    if (span === null) {
      els.offsetWarning.hidden = false;
      setText(els.offsetWarning, `The answer's offsets (${answer.start}, ${answer.end}) are outside the context.`);
      renderContext(null);
      return;
    }
    const slice = shown.context.slice(span[0], span[1]);
    els.offsetWarning.hidden = slice === answer.text;
    if (slice !== answer.text) {
      setText(els.offsetWarning, "The highlighted span differs from the answer's text: the offsets do not match.");
    }
    renderContext(span);
  }

  // The context as text nodes, the span [from, to) (UTF-16 units) in a <mark id="highlight">.
  function renderContext(span) {
    const context = shown.context;
    if (span === null) {
      els.rendered.replaceChildren(document.createTextNode(context));
      return;
    }
    const mark = document.createElement("mark");
    mark.id = "highlight";
    mark.appendChild(document.createTextNode(context.slice(span[0], span[1])));
    els.rendered.replaceChildren(
      document.createTextNode(context.slice(0, span[0])),
      mark,
      document.createTextNode(context.slice(span[1]))
    );
    // bring the mark into the box's view without scrolling the page
    const box = els.rendered; // position: relative, so the mark's offsetTop is within the box
    const top = mark.offsetTop;
    if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - mark.offsetHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }

  // --- wiring --------------------------------------------------------------------------------

  els.form.addEventListener("submit", ask);
  els.question.addEventListener("keydown", (event) => {
    // Enter asks; not while an input method is composing (there Enter confirms the characters)
    if (event.key === "Enter" && !event.isComposing && !event.shiftKey) {
      event.preventDefault();
      ask();
    }
  });
  els.sample.addEventListener("change", pickSample);
  els.context.addEventListener("input", () => {
    updateCount();
    const sample = samples[Number(els.sample.value)];
    if (els.sample.value !== "" && sample && sample.context !== els.context.value) els.sample.value = "";
  });
  els.key.addEventListener("input", () => storeKey(els.key.value));

  if (storedKey()) {
    els.key.value = storedKey();
  }
  updateCount();
  loadModel();
  loadSamples();

  // for tests and the curious: the conversion the page uses
  window.qatunePage = { codePointOffsets, countCodePoints };
})();
