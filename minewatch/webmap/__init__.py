"""See the results: a self-contained MapLibre web map (``map``), a shareable report (``report``,
``charts``), the precision review page (``review``) and a small headless-Chromium driver
(``browser``) used to test, time and print them. Nothing heavy is imported here."""
