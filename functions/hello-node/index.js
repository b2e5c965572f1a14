// A Node.js function for Spinlet: `index.main`, sync or async, gets the event and a context.
const os = require('node:os');

module.exports.main = async (event, context) => {
  const name = (event && event.name) || 'world';
  console.log(`hello ${name} from ${context.functionName} v${context.functionVersion}`);
  return {
    greeting: `hello ${name}`,
    executionId: context.executionId,
    node: process.version,
    host: os.hostname(),
  };
};
