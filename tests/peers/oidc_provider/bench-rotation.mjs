// For bench/login.py only: `node --import ./bench-rotation.mjs idp.mjs` runs the federation tests'
// IdP (idp.mjs, unchanged) with one option added, `rotateRefreshToken: true`, so that every refresh
// grant rotates the refresh token as Entente's do. oidc-provider's default rotates only public
// clients' tokens (or a token past 70% of its lifetime). The tests never load this file.
//
// How: this preload registers a resolve hook sending idp.mjs's `import Provider from 'oidc-provider'`
// to this module's default export, a Provider subclass adding the option; nothing else changes.
import { register } from 'node:module';
import Provider from 'oidc-provider';

const self = new URL(import.meta.url);
if (!self.searchParams.has('provider')) {
  const target = new URL(self);
  target.searchParams.set('provider', '1');
  const hook = `export async function resolve(specifier, context, next) {
    if (specifier === 'oidc-provider' && context.parentURL && context.parentURL.endsWith('/idp.mjs')) {
      return { url: ${JSON.stringify(target.href)}, shortCircuit: true };
    }
    return next(specifier, context);
  }`;
  register(`data:text/javascript,${encodeURIComponent(hook)}`);
}

export default class RotatingProvider extends Provider {
  constructor(issuer, configuration) {
    super(issuer, { ...configuration, rotateRefreshToken: true });
  }
}
