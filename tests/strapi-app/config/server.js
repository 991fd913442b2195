// The e2e suite (tests/strapi_e2e.rs) starts this app with HOST, PORT and the secrets below in
// the environment; nothing here is a production setting.
module.exports = ({ env }) => ({
  host: env('HOST', '127.0.0.1'),
  port: env.int('PORT', 1337),
  app: { keys: env.array('APP_KEYS') },
  logger: { updates: { enabled: false }, startup: { enabled: false } },
});
