// users-permissions in refresh mode, as the session-manager plugin recommends and
// shared/strapi-v5.md describes. The rate limit is off so tests can log in often.
module.exports = ({ env }) => ({
  'users-permissions': {
    config: {
      jwtSecret: env('JWT_SECRET'),
      jwtManagement: 'refresh',
      sessions: {
        accessTokenLifespan: env.int('ACCESS_TOKEN_LIFESPAN', 600),
        maxRefreshTokenLifespan: 2592000,
        idleRefreshTokenLifespan: 1209600,
        httpOnly: false,
        cookie: { name: 'strapi_up_refresh', sameSite: 'lax', path: '/', secure: false },
      },
      ratelimit: { enabled: false },
    },
  },
});
