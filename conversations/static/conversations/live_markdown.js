/* The chat page's live markdown: an answer being written is rendered as it streams, by the server's rules
   (conversations/rendering.py, given to the page as #markdown-policy): the same tags, attributes and link schemes,
   raw HTML shown as text, line breaks kept, links with rel="noopener noreferrer". The finished answer is then
   replaced by the server's own rendering. Without the libraries, `nexentMarkdown` is null: plain text. */
(function () {
  const policyElement = document.getElementById("markdown-policy");
  window.nexentMarkdown = null;
  if (!window.marked || !window.DOMPurify || !policyElement) return;
  const policy = JSON.parse(policyElement.textContent);
  const entities = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const escape = function (text) { return text.replace(/[&<>"']/g, function (c) { return entities[c]; }); };
  const parser = new window.marked.Marked({gfm: true, breaks: true, async: false});
  parser.use({renderer: {html: function (token) { return escape(token.text); }}});
  const purifier = window.DOMPurify(window);
  purifier.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A") node.setAttribute("rel", "noopener noreferrer");
  });
  // a link keeps its href only with one of the schemes, or none (relative), as DOMPurify's own default reads them
  const links = new RegExp("^(?:(?:" + policy.schemes.join("|") + "):|[^a-z]|[a-z+.\\-]+(?:[^a-z+.\\-:]|$))", "i");
  const config = {ALLOWED_TAGS: policy.tags, ALLOWED_ATTR: policy.attributes, ALLOWED_URI_REGEXP: links};
  window.nexentMarkdown = function (text) { return purifier.sanitize(parser.parse(text), config); };
})();
