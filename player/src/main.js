import { createApp } from 'vue';
import App from './App.vue';
import './style.css';
import { locale, setLocale } from './i18n.js';

setLocale(locale.value);
createApp(App).mount('#app');
