// Swagger UI on the service's own OpenAPI description (same origin: "Try it out" calls
// this server; "Authorize" takes an API key for the bearer scheme, kept in this tab only).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  persistAuthorization: false,
  tryItOutEnabled: false,
  validatorUrl: null, // never sends the description anywhere
});
