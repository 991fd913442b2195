// Seeds what the e2e suite needs: users alice, bob and carol (password Password1!), one article,
// and read access to articles for the authenticated role. Idempotent.
const USERS = ['alice', 'bob', 'carol'];
const PASSWORD = 'Password1!';

module.exports = {
  register() {},

  async bootstrap({ strapi }) {
    const role = await strapi.db
      .query('plugin::users-permissions.role')
      .findOne({ where: { type: 'authenticated' } });
    for (const username of USERS) {
      const email = `${username}@example.com`;
      const found = await strapi.db.query('plugin::users-permissions.user').findOne({ where: { email } });
      if (!found) {
        await strapi.plugin('users-permissions').service('user').add({
          username, email, password: PASSWORD, provider: 'local', confirmed: true, blocked: false, role: role.id,
        });
      }
    }
    for (const action of ['api::article.article.find', 'api::article.article.findOne']) {
      const found = await strapi.db
        .query('plugin::users-permissions.permission')
        .findOne({ where: { action, role: role.id } });
      if (!found) {
        await strapi.db.query('plugin::users-permissions.permission').create({ data: { action, role: role.id } });
      }
    }
    if ((await strapi.db.query('api::article.article').count()) === 0) {
      await strapi.db.query('api::article.article').create({ data: { title: 'Hello from a real Strapi' } });
    }
  },
};
