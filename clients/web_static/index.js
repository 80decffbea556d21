"use strict";
// The proposals whose catalogues this page serves, each a link to its run table.
fetch("/api/proposals").then(r => r.json()).then(data => {
  const list = document.getElementById("proposals");
  list.textContent = "";
  if (!data.proposals.length) {
    list.innerHTML = '<li class="muted">no catalogue yet: runs appear once the DataManager catalogues one</li>';
  }
  for (const name of data.proposals) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "/p/" + encodeURIComponent(name);
    link.textContent = name;
    item.appendChild(link);
    list.appendChild(item);
  }
});
