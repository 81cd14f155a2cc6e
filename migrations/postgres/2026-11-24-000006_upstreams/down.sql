DROP TABLE upstream_requests;
DROP TABLE upstream_links;
