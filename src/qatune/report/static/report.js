// qatune report: show one group of questions, or those matching a search. No server, no network.
(function () {
  "use strict";
  var list = document.getElementById("question-list");
  if (!list) {
    return; // the report has no questions (made without --data)
  }
  var questions = Array.prototype.slice.call(list.querySelectorAll("article.question"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll("button.filter"));
  var search = document.getElementById("search");
  var shown = document.getElementById("shown");
  var group = "all";
  // the text each question is searched in, lower-cased once
  var texts = questions.map(function (question) {
    return (question.getAttribute("data-id") + " " + question.textContent).toLowerCase();
  });

  function update() {
    var query = search ? search.value.trim().toLowerCase() : "";
    var count = 0;
    questions.forEach(function (question, index) {
      var visible = (group === "all" || question.getAttribute("data-group") === group) &&
        (query === "" || texts[index].indexOf(query) !== -1);
      question.hidden = !visible;
      if (visible) {
        count += 1;
      }
    });
    buttons.forEach(function (button) {
      var active = button.getAttribute("data-filter") === group;
      button.classList.toggle("active", active);
      button.setAttribute("aria-pressed", active ? "true" : "false");
    });
    if (shown) {
      shown.textContent = "showing " + count + " of " + questions.length;
    }
  }

  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      group = button.getAttribute("data-filter");
      update();
    });
  });
  if (search) {
    search.addEventListener("input", update);
  }
  update();
})();
