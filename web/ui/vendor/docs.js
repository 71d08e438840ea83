// The API console at /docs: Swagger UI (vendored beside this file) over the service's own
// OpenAPI document. Nothing is loaded from another origin: no validator badge, no CDN.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
